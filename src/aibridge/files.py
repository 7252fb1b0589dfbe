"""Private files: everything the gateway writes is 0600 in a 0700 data directory.

Modes are set explicitly (``os.open`` with a mode, then ``fchmod``/``chmod`` when the
result differs), so neither a permissive nor an odd umask changes them. A file that
already exists with looser bits is tightened. An existing directory is tightened when
the gateway owns it and it is not a shared sticky directory like ``/tmp``; otherwise a
warning says what to run.

Use :func:`private_dir` for a directory the gateway keeps files in, and
:func:`open_private` instead of ``os.open`` for every file it creates there.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, or check an existing one.

    An existing directory others can read is tightened to 0700 when ``tighten`` and the
    gateway owns it (and it is not sticky, like ``/tmp``); otherwise a warning is logged.
    Pass ``tighten=False`` for a directory the operator chose for other reasons (e.g. the
    parent of an explicit SQLite path). Returns ``path``.
    """
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        _check_existing_dir(path, tighten)
        return path
    # mkdir's mode is filtered by the umask: make it exactly 0700.
    os.chmod(path, DIR_MODE)
    return path


def _check_existing_dir(path: Path, tighten: bool) -> None:
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} exists and is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return
    ours = st.st_uid == os.geteuid() and not mode & stat.S_ISVTX
    if tighten and ours:
        os.chmod(path, DIR_MODE)
        log.warning(
            "data directory was readable by other users; tightened it to 0700",
            extra={"path": str(path), "previous_mode": f"{mode:04o}"},
        )
        return
    log.warning(
        "directory holding gateway files is accessible by other users; run chmod 700 on it",
        extra={"path": str(path), "mode": f"{mode:04o}"},
    )


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """``os.open(path, flags | O_CREAT)`` for a file only the gateway's user may read:
    created 0600, and an existing file with other bits is set to 0600. Returns the fd."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        _fix_mode(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private(path: Path) -> None:
    """Set an existing file to 0600 (nothing when it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _fix_mode(fd, path)
    finally:
        os.close(fd)


def _fix_mode(fd: int, path: Path) -> None:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode == FILE_MODE:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    except PermissionError:
        # Not ours (e.g. left by another user): say so rather than fail start-up.
        log.warning(
            "cannot make a gateway file private; run chmod 600 on it",
            extra={"path": str(path), "mode": f"{mode:04o}"},
        )
