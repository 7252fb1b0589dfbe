"""The append-only JSON-lines spill file of the recorder.

Records that cannot reach the database (queue full, database down at shutdown) are
appended here and replayed later. Every method is synchronous file I/O: the recorder calls
them through ``asyncio.to_thread`` so the event loop never waits on the disk.

Layout, in the data directory:

* ``<name>`` — the live file, appended to (one JSON record per line, fsync per append).
* ``<name>.<ns>-<pid>.replay`` — a live file the replayer has claimed by renaming it; new
  appends go to a fresh live file meanwhile. It is deleted only after every record in it
  is in the database, so a crash mid-replay replays it again (inserts are idempotent).
* ``<name>.rejected`` — records the database refused as invalid (kept for inspection).

Every file is 0600 (:func:`aibridge.files.open_private`), its directory 0700.

Appends and the claiming rename take an exclusive ``flock`` on the live file, and an
appender re-opens the file if it was renamed while it waited for the lock, so several
processes sharing one data directory neither interleave lines nor lose an append.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from aibridge.files import open_private, private_dir

REPLAY_SUFFIX = ".replay"
REJECTED_SUFFIX = ".rejected"


def append_lines(path: Path, lines: list[bytes], *, fsync: bool = True) -> None:
    """Append ``lines`` (without newlines) to ``path`` in one write, under an exclusive lock."""
    if not lines:
        return
    data = b"".join(line + b"\n" for line in lines)
    private_dir(path.parent, tighten=False)
    while True:
        fd = open_private(path, os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue
            if current.st_ino != st.st_ino:
                # Renamed for replay while we waited for the lock: write to the new file.
                continue
            # A crash can leave a torn last line; start ours on a fresh line so the torn
            # one costs only itself.
            if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
            return
        finally:
            os.close(fd)


def read_lines(path: Path, offset: int, max_lines: int) -> tuple[list[bytes], int]:
    """Up to ``max_lines`` non-empty lines of ``path`` from byte ``offset``; returns them
    and the offset after them (equal to ``offset`` at the end of the file)."""
    lines: list[bytes] = []
    with path.open("rb") as f:
        f.seek(offset)
        while len(lines) < max_lines:
            line = f.readline()
            if not line:
                break
            line = line.strip()
            if line:
                lines.append(line)
        return lines, f.tell()


class SpillFile:
    """The spill file ``path`` plus the replay files claimed from it."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync

    @property
    def rejected_path(self) -> Path:
        """Where records the database refused as invalid are kept."""
        return self.path.with_name(self.path.name + REJECTED_SUFFIX)

    def append(self, lines: list[bytes]) -> None:
        """Append serialised records (flushed and fsynced before returning)."""
        append_lines(self.path, lines, fsync=self.fsync)

    def reject(self, lines: list[bytes]) -> None:
        """Keep records the database refused, for an operator to inspect."""
        append_lines(self.rejected_path, lines, fsync=self.fsync)

    def replay_files(self) -> list[Path]:
        """Claimed replay files (this process's and any left by a crashed one), oldest first."""
        return sorted(self.path.parent.glob(self.path.name + ".*" + REPLAY_SUFFIX))

    def has_data(self) -> bool:
        """True when there is anything to replay."""
        try:
            if self.path.stat().st_size > 0:
                return True
        except FileNotFoundError:
            pass
        return bool(self.replay_files())

    def claim(self) -> list[Path]:
        """Rename the live file (if non-empty) to a new replay file; return every replay
        file, oldest first."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return self.replay_files()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same and os.fstat(fd).st_size > 0:
                target = self.path.with_name(
                    f"{self.path.name}.{time.time_ns():020d}-{os.getpid()}{REPLAY_SUFFIX}"
                )
                os.rename(self.path, target)
        finally:
            os.close(fd)
        return self.replay_files()

    @staticmethod
    def discard(path: Path) -> None:
        """Delete a fully replayed file (another process may have deleted it already)."""
        path.unlink(missing_ok=True)
