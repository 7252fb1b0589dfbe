"""aibridge data-plane benchmark: added latency, TTFB, throughput and memory of the gateway.

Run ``python -m bench.run`` (``--quick`` for a smoke run under 30 s, ``--help`` for knobs).

Three kinds of process, each started as ``python -m bench.run <role>``:

* the **upstream** (``_upstream``): a tiny aiohttp server answering ``POST /v1/messages`` with
  bytes pre-built by :mod:`aibridge.fakellm.anthropic` (the real Anthropic Messages wire
  format: a blocking ``message`` JSON, or an SSE stream of ~50 events written one event per
  write). ``--upstream fake`` uses ``aibridge fake-upstream`` instead, which parses and logs
  every request and so measures the fake more than the gateway;
* the **gateway**: ``aibridge serve`` on a temporary data dir with SQLite, after a provider
  and a user were created with the CLI against that data dir;
* the **load generator** (``_load``): an aiohttp client that runs one measurement cell (mode,
  concurrency, target) for a bounded duration and prints its results as JSON.

On a machine with at least two CPUs and ``os.sched_setaffinity``, the gateway is pinned to
CPU 0 and the upstream plus load generator to CPU 1, so "direct" and "through the gateway"
differ only by the gateway's own core. Every address is loopback; every child process is
killed on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
MODEL = "claude-sonnet-4-5-20250929"
PROVIDER = "bench"
UPSTREAM_KEY = "sk-ant-bench-fake"
STREAM_EVENTS = 50
GATEWAY_CPU = 0
CLIENT_CPU = 1
# Budget (docs/DESIGN.md "Performance budget"); the issue asks ≥ 50 % for streams.
BUDGET_ADDED_P50_MS = 1.0
BUDGET_ADDED_P99_MS = 5.0
BUDGET_ADDED_TTFB_MS = 1.0
BUDGET_RATIO = {"blocking": 0.30, "stream": 0.70}
ISSUE_STREAM_RATIO = 0.50
# Throughput ratios are judged where the gateway is saturated; at c=1 they only restate
# latency.
RATIO_MIN_CONCURRENCY = 16
START_TIMEOUT = 30.0
SOAK_GROWTH_LIMIT_MIB = 10.0


# ------------------------------------------------------------------------------ upstream


def _upstream_payloads(body_text_words: int) -> tuple[bytes, list[bytes]]:
    """The blocking body and the SSE events the fast upstream serves (built once)."""
    from aibridge.fakellm import anthropic
    from aibridge.fakellm.scenario import Scenario
    from aibridge.fakellm.wire import dumps

    deltas = STREAM_EVENTS - 6  # message_start, block start, ping, block stop, delta, stop
    text = " ".join(f"word{i}" for i in range(max(body_text_words, deltas)))
    scenario = Scenario.text_reply(text, chunks=deltas)
    ids = anthropic.Ids(scenario)
    blocking = dumps(anthropic.blocking_body(scenario, MODEL, ids))
    events = [ev.encode() for ev in anthropic.stream_events(scenario, MODEL, ids)]
    return blocking, events


async def _serve_upstream(port: int) -> None:
    """Serve the fast upstream until SIGTERM/SIGINT; print ``PORT <n>`` once listening."""
    from aiohttp import web

    blocking, events = _upstream_payloads(STREAM_EVENTS)
    json_headers = {"Content-Type": "application/json", "request-id": "req_bench"}
    sse_headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "request-id": "req_bench",
    }

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # A cheap check is enough: the load generator sends a fixed, compact body.
        if b'"stream":true' not in body:
            return web.Response(body=blocking, headers=json_headers)
        out = web.StreamResponse(headers=sse_headers)
        await out.prepare(request)
        for event in events:
            await out.write(event)
        await out.write_eof()
        return out

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------ load generator


@dataclass
class CellResult:
    """One measurement cell: a mode and concurrency against one target."""

    target: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    first_error: str | None = None
    warmup_requests: int = 0
    cpu_us_per_request: float | None = None


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def request_body(stream: bool) -> bytes:
    """A small Anthropic Messages request body (compact JSON, as SDKs send it)."""
    body = {
        "model": MODEL,
        "max_tokens": 1024,
        "stream": stream,
        "metadata": {"user_id": "bench"},
        "messages": [{"role": "user", "content": "Say hello in a few words."}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def _run_cell(
    url: str,
    headers: dict[str, str],
    mode: str,
    concurrency: int,
    duration: float,
    max_requests: int,
    warmup: float,
) -> dict[str, Any]:
    """Drive ``url`` with ``concurrency`` workers for ``duration`` seconds (after
    ``warmup`` seconds not counted), at most ``max_requests`` measured requests."""
    import aiohttp

    stream = mode == "stream"
    body = request_body(stream)
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors: list[str] = []
    counted = 0
    warm = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    clock = time.perf_counter

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:

        async def one() -> tuple[float, float | None]:
            began = clock()
            async with session.post(url, data=body, headers=headers) as resp:
                if stream:
                    first = await resp.content.readany()
                    ttfb = clock() - began
                    chunks = [first]
                    while chunk := await resp.content.readany():
                        chunks.append(chunk)
                    done = clock() - began
                    data = b"".join(chunks)
                    if resp.status != 200 or not data.rstrip().endswith(b'{"type":"message_stop"}'):
                        raise RuntimeError(f"stream: status {resp.status}, tail {data[-80:]!r}")
                    return done, ttfb
                data = await resp.read()
                done = clock() - began
                if resp.status != 200 or b'"type":"message"' not in data:
                    raise RuntimeError(f"blocking: status {resp.status}, body {data[:200]!r}")
                return done, None

        async def worker(until: float, record: bool) -> None:
            nonlocal counted, warm
            while clock() < until:
                if record:
                    if counted >= max_requests:
                        return
                    counted += 1
                else:
                    warm += 1
                try:
                    latency, ttfb = await one()
                except Exception as exc:
                    if record:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if record:
                    latencies.append(latency)
                    if ttfb is not None:
                        ttfbs.append(ttfb)

        if warmup > 0:
            until = clock() + warmup
            await asyncio.gather(*(worker(until, False) for _ in range(concurrency)))
        started = clock()
        until = started + duration
        await asyncio.gather(*(worker(until, True) for _ in range(concurrency)))
        elapsed = clock() - started

    ms = 1000.0
    result = CellResult(
        target="",
        mode=mode,
        concurrency=concurrency,
        requests=len(latencies),
        errors=len(errors),
        seconds=round(elapsed, 3),
        rps=round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(_percentile(latencies, 50) * ms, 3),
        p99_ms=round(_percentile(latencies, 99) * ms, 3),
        first_error=errors[0] if errors else None,
        warmup_requests=warm,
    )
    if stream:
        result.ttfb_p50_ms = round(_percentile(ttfbs, 50) * ms, 3)
        result.ttfb_p99_ms = round(_percentile(ttfbs, 99) * ms, 3)
    return asdict(result)


# ------------------------------------------------------------------------------ orchestration


class Processes:
    """Child processes started by the benchmark; :meth:`close` kills every one of them."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], *, cpu: int | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (pinned to ``cpu`` when given), stdout piped, stderr to a log."""

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=pin if cpu is not None else None,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        """SIGTERM every live child, then SIGKILL whatever did not exit within 5 s."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5.0)
        self._procs.clear()


def _read_line(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout: float) -> bytes:
    """Read ``proc``'s stdout until a line matches ``pattern``; fail after ``timeout`` s."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {err[-2000:]}")
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
            for line in buf.splitlines():
                m = pattern.search(line)
                if m:
                    return m.group(1)
        time.sleep(0.02)
    raise TimeoutError(f"{proc.args!r}: no line matching {pattern.pattern!r} in {timeout}s")


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Discard what ``proc`` wrote so far, so a chatty child never blocks on a full pipe."""
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
            with contextlib.suppress(BlockingIOError, TypeError):
                stream.read()


def _free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    # Fields 14 and 15 (utime, stime) counted from 1; the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _aibridge(*args: str) -> list[str]:
    """argv for the ``aibridge`` CLI of this interpreter's environment."""
    return [sys.executable, "-c", "from aibridge.cli import main; main()", *args]


def _cli(args: list[str], env: dict[str, str]) -> str:
    """Run an ``aibridge`` CLI command to completion (bounded) and return its stdout."""
    done = subprocess.run(
        _aibridge(*args), env=env, capture_output=True, timeout=60, check=False, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"aibridge {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def machine_description(pinned: bool) -> dict[str, Any]:
    """nproc, CPU model, Python version and the pinning used."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pinning": (
            f"gateway on CPU {GATEWAY_CPU}; upstream and load generator on CPU {CLIENT_CPU}"
            if pinned
            else "none (needs os.sched_setaffinity and at least 2 CPUs)"
        ),
    }


@dataclass
class Plan:
    """What to run."""

    modes: list[str]
    concurrencies: list[int]
    duration: float
    warmup: float
    max_requests: int
    soak_seconds: float
    upstream: str
    pin: bool
    src: str | None = None
    database_url: str | None = None
    keep_logs: bool = False
    notes: list[str] = field(default_factory=list)


def _load_cell(
    procs: Processes,
    plan: Plan,
    cpu: int | None,
    url: str,
    headers: dict[str, str],
    mode: str,
    concurrency: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """Run one cell in a fresh load-generator process and return its result."""
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "_load",
        "--url",
        url,
        "--headers",
        json.dumps(headers),
        "--mode",
        mode,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--max-requests",
        str(plan.max_requests),
    ]
    proc = procs.start(argv, cpu=cpu, env=_child_env())
    try:
        out, err = proc.communicate(timeout=duration + warmup + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for children: this one, plus the repo root on PYTHONPATH for ``bench``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # Never let a proxy setting send loopback traffic elsewhere.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if extra:
        env.update(extra)
    return env


@contextlib.contextmanager
def _stack(plan: Plan) -> Iterator[tuple[Processes, dict[str, Any]]]:
    """Start the upstream and the gateway; yield the process set and connection details."""
    procs = Processes()
    data_dir = Path(tempfile.mkdtemp(prefix="aibridge-bench-"))
    client_cpu = CLIENT_CPU if plan.pin else None
    gateway_cpu = GATEWAY_CPU if plan.pin else None
    try:
        if plan.upstream == "fast":
            up = procs.start(
                [sys.executable, "-m", "bench.run", "_upstream", "--port", "0"],
                cpu=client_cpu,
                env=_child_env(),
            )
            port = int(_read_line(up, re.compile(rb"^PORT (\d+)"), START_TIMEOUT))
        else:
            up = procs.start(
                _aibridge("fake-upstream", "--listen", f"{HOST}:0"),
                cpu=client_cpu,
                env=_child_env(),
            )
            port = int(
                _read_line(up, re.compile(rb"listening on http://[^:]+:(\d+)"), START_TIMEOUT)
            )
        upstream_url = f"http://{HOST}:{port}"

        gw_port = _free_port()
        env = _child_env(
            {
                "AIBRIDGE_DATA_DIR": str(data_dir),
                "AIBRIDGE_LISTEN": f"{HOST}:{gw_port}",
                "AIBRIDGE_LOG_LEVEL": "warning",
            }
        )
        env.pop("AIBRIDGE_DATABASE_URL", None)
        if plan.database_url:
            # Must be an empty database: the provider and user below are created in it.
            env["AIBRIDGE_DATABASE_URL"] = plan.database_url
        if plan.src:
            # A/B runs: the gateway, and the CLI that prepares its database (so that the
            # schema is the one that tree migrates to), import aibridge from another tree.
            env["PYTHONPATH"] = os.pathsep.join((plan.src, env["PYTHONPATH"]))
        _cli(
            [
                "providers",
                "create",
                PROVIDER,
                "--type",
                "anthropic",
                "--base-url",
                upstream_url,
                "--api-key",
                UPSTREAM_KEY,
            ],
            env,
        )
        token = _cli(["users", "create", "benchuser"], env).strip().splitlines()[-1].strip()
        if not token.startswith("aib-"):
            raise RuntimeError(f"unexpected users create output: {token!r}")
        gw = procs.start(_aibridge("serve"), cpu=gateway_cpu, env=env)
        _wait_http(f"http://{HOST}:{gw_port}/readyz", START_TIMEOUT)
        _drain(gw)
        yield (
            procs,
            {
                "upstream_url": upstream_url,
                "gateway_url": f"http://{HOST}:{gw_port}",
                "gateway_pid": gw.pid,
                "token": token,
                "data_dir": str(data_dir),
            },
        )
    finally:
        procs.close()
        if not plan.keep_logs:
            shutil.rmtree(data_dir, ignore_errors=True)


def run_benchmark(plan: Plan) -> dict[str, Any]:
    """Run every cell direct and through the gateway; return the full result document."""
    client_cpu = CLIENT_CPU if plan.pin else None
    started = time.monotonic()
    load_before = list(os.getloadavg())
    cells: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    with _stack(plan) as (procs, info):
        direct = {
            "url": info["upstream_url"] + "/v1/messages",
            "headers": {
                "x-api-key": UPSTREAM_KEY,
                "anthropic-version": "2023-06-01",
                "content-type": "application/json",
            },
        }
        via = {
            "url": f"{info['gateway_url']}/{PROVIDER}/v1/messages",
            "headers": {
                "Authorization": f"Bearer {info['token']}",
                "anthropic-version": "2023-06-01",
                "content-type": "application/json",
                "User-Agent": "aibridge-bench/1",
            },
        }
        pid = info["gateway_pid"]
        # Warm the gateway (connection pool, auth cache, code paths) before the baseline.
        for mode in plan.modes:
            warm = min(1.0, plan.duration)
            _load_cell(procs, plan, client_cpu, via["url"], via["headers"], mode, 16, warm, 0.0)
        memory["rss_after_warmup_mib"] = round(_rss_mib(pid), 1)
        gateway_requests = 0
        for mode in plan.modes:
            for conc in plan.concurrencies:
                for target, spec in (("direct", direct), ("gateway", via)):
                    cpu_before = _cpu_seconds(pid)
                    cell = _load_cell(
                        procs,
                        plan,
                        client_cpu,
                        spec["url"],
                        spec["headers"],
                        mode,
                        conc,
                        plan.duration,
                        plan.warmup,
                    )
                    cell["target"] = target
                    cells.append(cell)
                    if target == "gateway":
                        gateway_requests += cell["requests"]
                        # Whole-process CPU (event loop, SQLite threads, recorder): robust
                        # where wall-clock numbers suffer from other load on the machine.
                        served = cell["requests"] + cell["warmup_requests"] + cell["errors"]
                        if served:
                            used = _cpu_seconds(pid) - cpu_before
                            cell["cpu_us_per_request"] = round(used / served * 1e6, 1)
                    print(_cell_line(cell), file=sys.stderr, flush=True)
        memory["rss_after_cells_mib"] = round(_rss_mib(pid), 1)
        memory["gateway_requests_in_cells"] = gateway_requests
        if plan.soak_seconds > 0:
            soak = _load_cell(
                procs,
                plan,
                client_cpu,
                via["url"],
                via["headers"],
                plan.modes[0],
                64,
                plan.soak_seconds,
                0.0,
            )
            memory["soak_requests"] = soak["requests"]
            memory["rss_after_soak_mib"] = round(_rss_mib(pid), 1)
            growth = memory["rss_after_soak_mib"] - memory["rss_after_cells_mib"]
            memory["soak_growth_mib"] = round(growth, 1)
            memory["flat"] = growth < SOAK_GROWTH_LIMIT_MIB
    return {
        "machine": machine_description(plan.pin),
        "load_average": {"before": load_before, "after": list(os.getloadavg())},
        "plan": asdict(plan),
        "cells": cells,
        "rows": compare(cells),
        "memory": memory,
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def _cell_line(cell: dict[str, Any]) -> str:
    """One progress line for stderr."""
    ttfb = f" ttfb p50 {cell['ttfb_p50_ms']:.2f} ms" if cell.get("ttfb_p50_ms") else ""
    if cell.get("cpu_us_per_request"):
        ttfb += f" cpu {cell['cpu_us_per_request']:.0f} µs/req"
    err = f" ERRORS {cell['errors']} ({cell['first_error']})" if cell["errors"] else ""
    return (
        f"  {cell['target']:7} {cell['mode']:8} c={cell['concurrency']:<3} "
        f"{cell['requests']:6} req {cell['rps']:8.1f} req/s p50 {cell['p50_ms']:.2f} ms "
        f"p99 {cell['p99_ms']:.2f} ms{ttfb}{err}"
    )


def compare(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair direct and gateway cells and judge each pair against the budget."""
    by_key = {(c["target"], c["mode"], c["concurrency"]): c for c in cells}
    rows: list[dict[str, Any]] = []
    for (target, mode, conc), gw in by_key.items():
        if target != "gateway" or ("direct", mode, conc) not in by_key:
            continue
        d = by_key[("direct", mode, conc)]
        row: dict[str, Any] = {
            "mode": mode,
            "concurrency": conc,
            "direct_rps": d["rps"],
            "gateway_rps": gw["rps"],
            "ratio": round(gw["rps"] / d["rps"], 3) if d["rps"] else float("nan"),
            "added_p50_ms": round(gw["p50_ms"] - d["p50_ms"], 3),
            "added_p99_ms": round(gw["p99_ms"] - d["p99_ms"], 3),
            "added_ttfb_p50_ms": None,
            "gateway_cpu_us_per_request": gw.get("cpu_us_per_request"),
            "errors": d["errors"] + gw["errors"],
        }
        checks = {
            "p50": row["added_p50_ms"] < BUDGET_ADDED_P50_MS,
            "p99": row["added_p99_ms"] < BUDGET_ADDED_P99_MS,
        }
        if mode == "stream":
            row["added_ttfb_p50_ms"] = round(gw["ttfb_p50_ms"] - d["ttfb_p50_ms"], 3)
            checks["ttfb"] = row["added_ttfb_p50_ms"] < BUDGET_ADDED_TTFB_MS
        if conc >= RATIO_MIN_CONCURRENCY:
            checks["ratio"] = row["ratio"] >= BUDGET_RATIO[mode]
        row["checks"] = checks
        row["meets_budget"] = all(checks.values()) and row["errors"] == 0
        rows.append(row)
    return rows


def render_table(doc: dict[str, Any]) -> str:
    """The human-readable results table (Markdown)."""
    lines = [
        "| mode | c | direct req/s | gateway req/s | ratio | added p50 ms | added p99 ms "
        "| added TTFB p50 ms | gateway CPU µs/req | budget |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["rows"]:
        failed = [k for k, ok in r["checks"].items() if not ok]
        if r["errors"]:
            failed.append(f"{r['errors']} errors")
        verdict = "ok" if r["meets_budget"] else "MISS: " + ", ".join(failed)
        ttfb = "-" if r["added_ttfb_p50_ms"] is None else f"{r['added_ttfb_p50_ms']:+.2f}"
        lines.append(
            f"| {r['mode']} | {r['concurrency']} | {r['direct_rps']:,.0f} | "
            f"{r['gateway_rps']:,.0f} | {r['ratio'] * 100:.0f} % | {r['added_p50_ms']:+.2f} | "
            f"{r['added_p99_ms']:+.2f} | {ttfb} | {r['gateway_cpu_us_per_request'] or 0:,.0f} | "
            f"{verdict} |"
        )
    lines.append("")
    lines.append(
        "| target | mode | c | requests | req/s | p50 ms | p99 ms | TTFB p50 ms | errors |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in doc["cells"]:
        ttfb = "-" if c.get("ttfb_p50_ms") is None else f"{c['ttfb_p50_ms']:.2f}"
        lines.append(
            f"| {c['target']} | {c['mode']} | {c['concurrency']} | {c['requests']:,} | "
            f"{c['rps']:,.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {ttfb} | {c['errors']} |"
        )
    mem = doc["memory"]
    lines.append("")
    lines.append(
        f"Gateway RSS: {mem.get('rss_after_warmup_mib')} MiB after warm-up, "
        f"{mem.get('rss_after_cells_mib')} MiB after {mem.get('gateway_requests_in_cells', 0):,} "
        "measured requests"
        + (
            f", {mem['rss_after_soak_mib']} MiB after a further {mem['soak_requests']:,} "
            f"(growth {mem['soak_growth_mib']:+.1f} MiB: "
            f"{'flat' if mem['flat'] else 'NOT flat'}, limit {SOAK_GROWTH_LIMIT_MIB} MiB)"
            if "rss_after_soak_mib" in mem
            else ""
        )
        + "."
    )
    return "\n".join(lines)


def _masked_db(url: str | None) -> str:
    if not url:
        return "SQLite file in a temporary data dir"
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}://{creds.split(':', 1)[0] + '@' if at else ''}{host}"


def render_header(doc: dict[str, Any]) -> str:
    """Machine and plan summary."""
    m, p = doc["machine"], doc["plan"]
    load = doc["load_average"]
    busy = max(load["before"][0], load["after"][0]) > 0.5 * (m["nproc"] or 1)
    return (
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}\n"
        f"pinning: {m['pinning']}\n"
        f"gateway source: {p['src'] or 'installed aibridge'}\n"
        f"database: {_masked_db(p.get('database_url'))}\n"
        f"upstream: {p['upstream']}; {p['duration']} s per cell after {p['warmup']} s warm-up "
        f"(≤ {p['max_requests']:,} requests); stream = {STREAM_EVENTS} SSE events\n"
        f"budget: added p50 < {BUDGET_ADDED_P50_MS} ms, p99 < {BUDGET_ADDED_P99_MS} ms, "
        f"TTFB < {BUDGET_ADDED_TTFB_MS} ms; throughput ≥ "
        f"{BUDGET_RATIO['stream']:.0%} streams (issue: ≥ {ISSUE_STREAM_RATIO:.0%}), "
        f"≥ {BUDGET_RATIO['blocking']:.0%} blocking, judged at c ≥ {RATIO_MIN_CONCURRENCY}\n"
        f"load average (1 min) before/after: {load['before'][0]:.2f}/{load['after'][0]:.2f}"
        + (" - WARNING: other load on this machine; wall-clock numbers are unreliable" * busy)
    )


# ------------------------------------------------------------------------------ CLI


def _csv_ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def _csv_modes(value: str) -> list[str]:
    modes = [v.strip() for v in value.split(",") if v.strip()]
    for mode in modes:
        if mode not in ("blocking", "stream"):
            raise argparse.ArgumentTypeError(f"unknown mode {mode!r}")
    return modes


def _run_async(coro: Any) -> Any:
    """Run ``coro`` on uvloop when available (as the gateway does)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    """Entry point: the orchestrator, or one of the internal child roles."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_upstream"]:
        p = argparse.ArgumentParser(prog="bench.run _upstream")
        p.add_argument("--port", type=int, default=0)
        ns = p.parse_args(args[1:])
        _run_async(_serve_upstream(ns.port))
        return 0
    if args[:1] == ["_load"]:
        p = argparse.ArgumentParser(prog="bench.run _load")
        p.add_argument("--url", required=True)
        p.add_argument("--headers", required=True)
        p.add_argument("--mode", required=True, choices=("blocking", "stream"))
        p.add_argument("--concurrency", type=int, required=True)
        p.add_argument("--duration", type=float, required=True)
        p.add_argument("--warmup", type=float, default=0.0)
        p.add_argument("--max-requests", type=int, default=1_000_000)
        ns = p.parse_args(args[1:])
        if not ns.url.startswith(f"http://{HOST}:"):
            raise SystemExit("the load generator only talks to loopback")
        result = _run_async(
            _run_cell(
                ns.url,
                json.loads(ns.headers),
                ns.mode,
                ns.concurrency,
                ns.duration,
                ns.max_requests,
                ns.warmup,
            )
        )
        print(json.dumps(result))
        return 0

    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=(
            "Benchmark the aibridge data plane: the same load directly against an upstream "
            "and through `aibridge serve`; prints added latency/TTFB, throughput ratio, "
            "gateway RSS and the budget verdict."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 30 s")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per cell (default 5, quick 0.7)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="warm-up seconds per cell (default 1)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="cap of measured requests per cell"
    )
    parser.add_argument(
        "--concurrency", type=_csv_ints, default=None, help="e.g. 1,16,64 (default)"
    )
    parser.add_argument(
        "--modes", type=_csv_modes, default=["blocking", "stream"], help="blocking,stream"
    )
    parser.add_argument(
        "--soak", type=float, default=None, help="memory soak seconds at c=64 (default 20)"
    )
    parser.add_argument(
        "--upstream",
        choices=("fast", "fake"),
        default="fast",
        help=(
            "fast: pre-built Anthropic bytes, 50-event streams (default); fake: "
            "`aibridge fake-upstream` (its default ~10-event reply; parses and logs every "
            "request, so it measures the fake as much as the gateway)"
        ),
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--src",
        default=None,
        help=(
            "run the gateway (and the CLI that prepares its database) with aibridge imported "
            "from this directory (A/B comparisons)"
        ),
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=(
            "gateway database (default: a SQLite file in a temporary data dir); must be an "
            "EMPTY database, e.g. postgresql://postgres@127.0.0.1:5432/aibridge_bench "
            "created with createdb and dropped afterwards"
        ),
    )
    parser.add_argument("--json", type=Path, default=None, help="write full results here")
    ns = parser.parse_args(args)

    can_pin = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    if can_pin and not {GATEWAY_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        can_pin = False
    plan = Plan(
        modes=ns.modes,
        concurrencies=ns.concurrency or [1, 16, 64],
        duration=ns.duration if ns.duration is not None else (0.7 if ns.quick else 5.0),
        warmup=ns.warmup if ns.warmup is not None else (0.2 if ns.quick else 1.0),
        max_requests=ns.max_requests,
        soak_seconds=ns.soak if ns.soak is not None else (1.0 if ns.quick else 20.0),
        upstream=ns.upstream,
        pin=can_pin and not ns.no_pin,
        src=str(Path(ns.src).resolve()) if ns.src else None,
        database_url=ns.database_url,
    )
    doc = run_benchmark(plan)
    print(render_header(doc))
    print()
    print(render_table(doc))
    print(f"\nwall time {doc['wall_seconds']} s")
    if ns.json is not None:
        ns.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"results written to {ns.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
