"""Real ``aibridge serve`` subprocesses for tests: start, watch their logs, stop or kill.

Waiting on another process cannot use an in-process event, so readiness is a wait on the
replica's log lines and other conditions are bounded polls (:func:`poll`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aibridge.testing.gateway import find_admin_token

AIBRIDGE = Path(sys.executable).with_name("aibridge")
"""The ``aibridge`` command of the running interpreter's environment (the virtualenv)."""
# Settings of the test process that must not leak into a replica.
_NOT_INHERITED = frozenset(
    ("AIBRIDGE_DATABASE_URL", "AIBRIDGE_LISTEN", "AIBRIDGE_ENCRYPTION_KEY", "AIBRIDGE_WORKERS")
)
# A deadline for a start that hangs, not a speed check: a start imports ~3 s of modules
# (the MCP SDK most), and with --workers 2 on a loaded 2-core CI machine that was seen to
# take over 30 s.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Replica:
    """One ``aibridge serve`` process and everything it printed."""

    name: str
    proc: asyncio.subprocess.Process
    url: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    _lines: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _pump(self, stream: asyncio.StreamReader, sink: list[str]) -> None:
        # Always drained: a full pipe would block the replica's logging.
        while line := await stream.readline():
            sink.append(line.decode(errors="replace").rstrip("\n"))
            async with self._lines:
                self._lines.notify_all()
        async with self._lines:
            self._lines.notify_all()

    def start_readers(self) -> None:
        """Collect stdout and stderr in the background."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            asyncio.create_task(self._pump(self.proc.stdout, self.stdout)),
            asyncio.create_task(self._pump(self.proc.stderr, self.stderr)),
        ]

    def logged(self, needle: str, *, after: int = 0) -> bool:
        """Whether stderr line ``after`` or later contains ``needle``."""
        return any(needle in line for line in self.stderr[after:])

    def count(self, needle: str) -> int:
        """How many stderr lines contain ``needle``."""
        return sum(needle in line for line in self.stderr)

    async def wait_for_log(self, needle: str, *, after: int = 0, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until the replica logs ``needle`` (fails early if it exits)."""
        async with asyncio.timeout(timeout), self._lines:
            await self._lines.wait_for(
                lambda: self.logged(needle, after=after) or self.proc.returncode is not None
            )
        if not self.logged(needle, after=after):
            raise AssertionError(f"replica {self.name} exited:\n{self.tail()}")

    async def wait_for_count(self, needle: str, count: int, *, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until ``count`` stderr lines contain ``needle`` (fails early if it exits)."""
        async with asyncio.timeout(timeout), self._lines:
            await self._lines.wait_for(
                lambda: self.count(needle) >= count or self.proc.returncode is not None
            )
        if self.count(needle) < count:
            raise AssertionError(f"replica {self.name} exited:\n{self.tail()}")

    @property
    def port(self) -> int:
        """The port the replica listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def peak_rss_bytes(self) -> int:
        """The process's peak resident set size so far (``VmHWM`` in ``/proc``)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")

    def tail(self, lines: int = 40) -> str:
        """The end of the replica's output, for failure messages."""
        return "\n".join(self.stdout[-10:] + self.stderr[-lines:])

    def admin_token(self) -> str | None:
        """The first admin key, if this replica printed it."""
        return find_admin_token(self.stdout)

    async def stop(self) -> None:
        """SIGTERM, bounded wait, then SIGKILL; stop collecting output."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        await self._stop_readers()

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """SIGTERM and wait (bounded) for a clean exit; returns the exit code. Fails the
        test if the replica does not exit in time (it is then killed)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"replica {self.name} did not stop within {timeout}s:\n{self.tail()}"
            ) from None
        await self._stop_readers()
        return code

    async def kill(self) -> None:
        """SIGKILL (no clean-up runs) and reap the process."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        await self._stop_readers()

    async def _stop_readers(self) -> None:
        # The pipes reach EOF once the process is gone: drain what is left first.
        try:
            async with asyncio.timeout(5):
                await asyncio.gather(*self.readers, return_exceptions=True)
        except TimeoutError:
            for task in self.readers:
                task.cancel()
            await asyncio.gather(*self.readers, return_exceptions=True)


async def spawn_serve(
    data_dir: Path,
    port: int,
    *,
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> asyncio.subprocess.Process:
    """Start ``aibridge serve --listen 127.0.0.1:<port>`` in ``data_dir`` with stdout and
    stderr piped, and return at once. The ``AIBRIDGE_*`` settings of this process's
    environment are not inherited: ``db_url`` None means SQLite in ``data_dir``, ``env``
    adds settings, ``args`` more command-line flags."""
    if not AIBRIDGE.exists():
        raise RuntimeError(f"{AIBRIDGE} not found: install aibridge in this environment")
    full_env = {
        **{k: v for k, v in os.environ.items() if k not in _NOT_INHERITED},
        "AIBRIDGE_DATA_DIR": str(data_dir),
        "AIBRIDGE_LOG_LEVEL": "info",
        "AIBRIDGE_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    if db_url is not None:
        full_env["AIBRIDGE_DATABASE_URL"] = db_url
    full_env.update(env or {})
    return await asyncio.create_subprocess_exec(
        str(AIBRIDGE),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
        cwd=str(data_dir),
    )


async def start_replica(
    name: str,
    db_url: str | None,
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    listening: int = 1,
) -> Replica:
    """Start ``aibridge serve`` on a free port and wait for ``listening`` "aibridge
    listening" log lines (one per worker). ``db_url`` None means SQLite in ``data_dir``;
    ``env`` adds ``AIBRIDGE_*`` settings, ``args`` more command-line flags."""
    port = free_port()
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    proc = await spawn_serve(data_dir, port, db_url=db_url, env=env, args=args)
    replica = Replica(name, proc, f"http://127.0.0.1:{port}")
    replica.start_readers()
    try:
        await replica.wait_for_count("aibridge listening", listening, timeout=START_TIMEOUT)
    except BaseException:
        await replica.stop()
        raise
    return replica


async def poll(check: Callable[[], Awaitable[object]], timeout: float, what: str) -> None:  # noqa: ASYNC109
    """Bounded poll of another process's state (no in-process event exists for it)."""
    try:
        async with asyncio.timeout(timeout):
            # The state lives in another process or in a database: nothing to await.
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
