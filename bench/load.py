"""Load generators: ``wrk`` (preferred) and the Python aiohttp client.

Both run one measurement as a separate process on the client CPU and return the same
dict: ``requests`` (successful), ``errors``, ``first_error``, ``seconds``, ``rps``,
``p50_ms``, ``p99_ms`` and, for the Python client on streams, ``ttfb_p50_ms`` /
``ttfb_p99_ms``. A response counts as an error when its status is not 2xx or the socket
failed (wrk), or when its body is not a complete reply of the API (Python client).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Api, child_env
from bench.procs import Processes

WRK_RESULT = re.compile(rb"^BENCHJSON (\{.*\})$", re.MULTILINE)

# wrk calls done() once at the end; printing JSON from Lua avoids parsing wrk's
# human-readable summary (whose units change with magnitude).
_WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%.0f,"p99_us":%.0f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


async def python_cell(
    url: str,
    headers: dict[str, str],
    api: Api,
    stream: bool,
    concurrency: int,
    duration: float,
    max_requests: int,
) -> dict[str, Any]:
    """Drive ``url`` with ``concurrency`` workers for ``duration`` s (runs in the child)."""
    import aiohttp

    body = api.body(stream)
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors: list[str] = []
    started_requests = 0
    clock = time.perf_counter

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
        auto_decompress=False,
    ) as session:

        async def one() -> tuple[float, float | None]:
            began = clock()
            ttfb = None
            async with session.post(url, data=body, headers=headers) as resp:
                if stream:
                    chunks = [await resp.content.readany()]
                    ttfb = clock() - began
                    while chunk := await resp.content.readany():
                        chunks.append(chunk)
                    data = b"".join(chunks)
                else:
                    data = await resp.read()
                done = clock() - began
                if not api.response_ok(stream, resp.status, data):
                    raise RuntimeError(f"status {resp.status}, body tail {data[-120:]!r}")
            return done, ttfb

        async def worker(until: float) -> None:
            nonlocal started_requests
            while clock() < until and started_requests < max_requests:
                started_requests += 1
                try:
                    latency, ttfb = await one()
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(latency)
                if ttfb is not None:
                    ttfbs.append(ttfb)

        started = clock()
        await asyncio.gather(*(worker(started + duration) for _ in range(concurrency)))
        elapsed = clock() - started

    ms = 1000.0
    result: dict[str, Any] = {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(_percentile(latencies, 50) * ms, 3),
        "p99_ms": round(_percentile(latencies, 99) * ms, 3),
        "ttfb_p50_ms": None,
        "ttfb_p99_ms": None,
    }
    if stream:
        result["ttfb_p50_ms"] = round(_percentile(ttfbs, 50) * ms, 3)
        result["ttfb_p99_ms"] = round(_percentile(ttfbs, 99) * ms, 3)
    return result


def wrk_version() -> str | None:
    """``wrk``'s version line, or None when wrk is not installed."""
    path = shutil.which("wrk")
    if path is None:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    # wrk prints its version with the usage text and exits 1.
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


@dataclass
class LoadRunner:
    """Runs one measurement with the chosen generator on the client CPU."""

    procs: Processes
    cpu: int | None
    kind: str
    """``wrk`` or ``python``."""
    work_dir: Path
    max_requests: int
    version: str = ""

    @property
    def label(self) -> str:
        """Which generator produced the numbers (printed with every table)."""
        if self.kind == "wrk":
            return f"{self.version or 'wrk'} (-t1 -c<c> --latency, Lua script posting a fixed body)"
        return "Python aiohttp client (bench.roles load), one process per measurement"

    def seconds(self, requested: float) -> float:
        """The duration actually run: wrk only takes whole seconds."""
        if self.kind == "wrk":
            return float(max(1, math.ceil(requested - 1e-9)))
        return requested

    def run(
        self,
        url: str,
        headers: dict[str, str],
        api: Api,
        stream: bool,
        concurrency: int,
        seconds: float,
        *,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """One measurement against ``url``; ``kind`` overrides the generator (TTFB)."""
        if (kind or self.kind) == "wrk":
            return self._wrk(url, headers, api, stream, concurrency, seconds)
        return self._python(url, headers, api, stream, concurrency, seconds)

    def _wrk(
        self,
        url: str,
        headers: dict[str, str],
        api: Api,
        stream: bool,
        concurrency: int,
        seconds: float,
    ) -> dict[str, Any]:
        script = self._lua_script(headers, api.body(stream))
        secs = int(self.seconds(seconds))
        argv = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{secs}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        try:
            out = self._communicate(argv, secs + 30, "wrk")
        except RuntimeError as exc:
            # wrk exits 1 when it cannot connect at all: a cell of errors, not a crash,
            # so the cells already measured are still reported.
            return _failed(str(exc), concurrency)
        m = WRK_RESULT.search(out)
        if m is None:
            raise RuntimeError(f"wrk printed no result: {out[-2000:]!r}")
        raw = json.loads(m.group(1))
        ok = raw["requests"] - raw["status"]
        socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
        elapsed = raw["duration_us"] / 1e6
        first_error = None
        if raw["status"] or socket_errors:
            first_error = (
                f"non-2xx {raw['status']}, socket connect {raw['connect']} read {raw['read']} "
                f"write {raw['write']} timeout {raw['timeout']}"
            )
        return {
            "requests": ok,
            "errors": raw["status"] + socket_errors,
            "first_error": first_error,
            "seconds": round(elapsed, 3),
            "rps": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": round(raw["p50_us"] / 1000, 3),
            "p99_ms": round(raw["p99_us"] / 1000, 3),
            "ttfb_p50_ms": None,
            "ttfb_p99_ms": None,
        }

    def _lua_script(self, headers: dict[str, str], body: bytes) -> Path:
        """A wrk script posting ``body`` with ``headers`` (written once per content)."""
        lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
        for name, value in headers.items():
            lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
        text = "\n".join(lines) + "\n" + _WRK_DONE
        path = self.work_dir / f"wrk-{hashlib.sha256(text.encode()).hexdigest()[:12]}.lua"
        if not path.exists():
            path.write_text(text)
        return path

    def _python(
        self,
        url: str,
        headers: dict[str, str],
        api: Api,
        stream: bool,
        concurrency: int,
        seconds: float,
    ) -> dict[str, Any]:
        argv = [
            sys.executable,
            "-m",
            "bench.roles",
            "load",
            "--url",
            url,
            "--headers",
            json.dumps(headers),
            "--api",
            api.name,
            "--mode",
            "stream" if stream else "blocking",
            "--concurrency",
            str(concurrency),
            "--duration",
            str(seconds),
            "--max-requests",
            str(self.max_requests),
        ]
        out = self._communicate(argv, seconds + 60, "python-load")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    def _communicate(self, argv: list[str], timeout: float, name: str) -> bytes:
        """Run ``argv`` on the client CPU to completion (bounded); return its stdout."""
        proc = self.procs.start(argv, cpu=self.cpu, env=child_env(), name=name)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            self.procs.stop(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {self.procs.log_tail(proc)}")
        return out


def _failed(message: str, errors: int) -> dict[str, Any]:
    """The result of a measurement that could not run."""
    return {
        "requests": 0,
        "errors": max(1, errors),
        "first_error": " ".join(message.split())[-300:],
        "seconds": 0.0,
        "rps": 0.0,
        "p50_ms": float("nan"),
        "p99_ms": float("nan"),
        "ttfb_p50_ms": None,
        "ttfb_p99_ms": None,
    }


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
