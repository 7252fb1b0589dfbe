"""Child processes (started pinned, always killed), readiness waits, and /proc accounting."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class Processes:
    """Child processes started by the benchmark; :meth:`close` kills every one of them."""

    def __init__(self, log_dir: Path) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        self._log_dir = log_dir

    def start(
        self,
        argv: list[str],
        *,
        cpu: int | None,
        env: dict[str, str],
        name: str,
        stdout: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session, pinned to ``cpu`` when given.

        stdout is piped when ``stdout`` (the child prints one line we need, or its
        result), else it goes with stderr to ``<log_dir>/<name>.log``, so a chatty child
        never blocks on a full pipe.
        """

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        log_path = self._log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE if stdout else log,
                stderr=log,
                env=env,
                preexec_fn=pin if cpu is not None else None,
                start_new_session=True,
            )
        self._procs.append(proc)
        self._logs[proc.pid] = log_path
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], limit: int = 2000) -> str:
        """The end of ``proc``'s log file (for error messages)."""
        path = self._logs.get(proc.pid)
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")[-limit:]

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM ``proc``'s whole session, SIGKILL it after 5 s; forget it."""
        _terminate([proc])
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        """Stop every child still known (and the sessions they started)."""
        _terminate(self._procs)
        self._procs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # Each child leads its own session: signalling the group also reaches the workers
    # that ``aibridge serve --workers N`` spawned.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=5.0)
        # Workers of a supervisor that exited on SIGTERM may still be shutting down.
        _signal_group(proc, signal.SIGKILL)


def read_line(
    procs: Processes, proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout: float
) -> bytes:
    """Read ``proc``'s stdout until a line matches ``pattern``; fail after ``timeout`` s."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {procs.log_tail(proc)}")
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
            for line in buf.splitlines():
                if m := pattern.search(line):
                    return m.group(1)
        time.sleep(0.02)
    raise TimeoutError(f"{proc.args!r}: no line matching {pattern.pattern!r} in {timeout}s")


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200, at most ``timeout`` seconds (fail early if
    ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        # Fields after the command name, which may contain spaces and parentheses.
        return fh.read().rpartition(")")[2].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (``--workers N`` spawns worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int(_stat_fields(int(entry))[1])
                children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float | None:
    """utime + stime (all threads) of ``pids``, in seconds; None if one of them is gone."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            return None
        # Fields 14 and 15 (utime, stime) counted from 1; the split starts at field 3.
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """utime + stime of each live thread of ``pid`` in seconds, by ``"<tid> <name>"`` (the
    main thread's tid is ``pid``; Python threads are not named in /proc, others are)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError):
                with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                    name = fh.read().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    fields = fh.read().rpartition(")")[2].split()
                out[f"{tid} {name}"] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def rss_mib(pids: list[int]) -> float:
    """Summed resident set size of ``pids`` in MiB."""
    total_kib = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
                    break
    return total_kib / 1024
