"""aibridge data-plane benchmark: aibridge against a bare aiohttp relay, cell by cell.

Run ``python -m bench.run`` (``--quick`` for a smoke run under ~40 s, ``--help`` for knobs).

Targets, all driven by the same load generator with the same fixed request body:

* ``direct``: the load generator straight against the fast fake upstream;
* ``bare``: a bare aiohttp relay in front of it (:mod:`bench.roles`), the yardstick;
* ``aibridge``: ``aibridge serve`` from this tree (SQLite by default, or a temporary
  PostgreSQL database), plus ``aibridge@<ref>`` with ``--ref`` and ``aibridge-w<N>`` with
  ``--workers N``.

A cell is one API (OpenAI chat completions, Anthropic messages), one mode (blocking,
stream) and one concurrency. bare and aibridge are pinned to CPU 0, the upstream and the
load generator to CPU 1, and only one target is under load at a time. The relay's CPU per
request is the delta of utime+stime (its whole process tree) over the measured window
divided by the requests completed. Every address is loopback, every port ephemeral, and
every child process is killed on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.common import APIS, CLIENT_CPU, MODES, RELAY_CPU, REPO_ROOT, Api
from bench.load import LoadRunner, wrk_version
from bench.procs import Processes, cpu_seconds, rss_mib
from bench.stack import Stack, Target, check_target

SOAK_CONCURRENCY = 64
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Plan:
    """What to run."""

    apis: list[str]
    modes: list[str]
    concurrencies: list[int]
    duration: float
    warmup: float
    initial_warmup: float
    repeat: int
    interleave: bool
    soak_seconds: float
    ttfb_seconds: float
    generator: str
    pin: bool
    db: str
    postgres_url: str | None
    workers: int
    ref: str | None
    max_requests: int
    limits: bool = False
    limits_redis: str | None = None
    bare_recording: bool = False
    log_level: str = "warning"
    tracing: bool = False
    tracing_ratios: list[float] = field(default_factory=lambda: [1.0])
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One scheduled measurement."""

    repeat: int
    api: Api
    mode: str
    concurrency: int
    target: Target


def schedule(plan: Plan, targets: list[Target]) -> list[Step]:
    """The order of measurements.

    ``--interleave``: repetitions are the outer loop and the relays' order flips every
    repetition, so slow drifts of the shared VM hit bare and aibridge alike. Otherwise
    each cell's repetitions run back to back.
    """
    cells = [(APIS[a], m, c) for a in plan.apis for m in plan.modes for c in plan.concurrencies]
    direct = [t for t in targets if t.kind == "direct"]
    relays = [t for t in targets if t.kind != "direct"]
    steps: list[Step] = []
    if plan.interleave:
        for rep in range(plan.repeat):
            order = relays if rep % 2 == 0 else relays[::-1]
            for api, mode, conc in cells:
                steps += [Step(rep, api, mode, conc, t) for t in direct + order]
    else:
        for api, mode, conc in cells:
            for rep in range(plan.repeat):
                steps += [Step(rep, api, mode, conc, t) for t in direct + relays]
    return steps


def measure(runner: LoadRunner, plan: Plan, step: Step) -> dict[str, Any]:
    """Warm up, then one measured run with the relay's CPU time around it."""
    target, api, stream = step.target, step.api, step.mode == "stream"
    url, headers = target.url(api), target.headers(api)
    if plan.warmup > 0:
        runner.run(url, headers, api, stream, step.concurrency, plan.warmup)
    pids = target.relay_pids()
    before = cpu_seconds(pids) if pids else None
    result = runner.run(url, headers, api, stream, step.concurrency, plan.duration)
    after = cpu_seconds(pids) if pids else None
    cpu_us = None
    if before is not None and after is not None and result["requests"]:
        cpu_us = round((after - before) / result["requests"] * 1e6, 1)
    return {
        "target": target.name,
        "api": api.name,
        "mode": step.mode,
        "concurrency": step.concurrency,
        "repeat": step.repeat,
        "generator": runner.kind,
        **result,
        "cpu_us_per_request": cpu_us,
    }


def progress(cell: dict[str, Any]) -> str:
    """One progress line for stderr."""
    cpu = f" cpu {cell['cpu_us_per_request']:.0f} µs/req" if cell["cpu_us_per_request"] else ""
    err = f" ERRORS {cell['errors']} ({cell['first_error']})" if cell["errors"] else ""
    return (
        f"  #{cell['repeat']} {cell['target']:16} {cell['api']:9} {cell['mode']:8} "
        f"c={cell['concurrency']:<3} {cell['requests']:7} req {cell['rps']:8.1f} req/s "
        f"p50 {cell['p50_ms']:.2f} ms p99 {cell['p99_ms']:.2f} ms{cpu}{err}"
    )


def machine_description(pinned: bool, workers: int) -> dict[str, Any]:
    """nproc, CPU model, Python version and the placement used."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    placement = (
        f"bare and aibridge on CPU {RELAY_CPU}; upstream and load generator on CPU {CLIENT_CPU}"
        if pinned
        else "none (needs os.sched_setaffinity and CPUs 0 and 1)"
    )
    if workers > 1:
        placement += f"; aibridge-w{workers} unpinned (all CPUs)"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pinning": placement,
    }


def _tree_revision() -> str:
    """``<sha>`` of this tree, ``+dirty`` when it has uncommitted changes to src/."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


@contextlib.contextmanager
def started_stack(plan: Plan, tmp: Path) -> Iterator[tuple[Stack, list[Target]]]:
    """Start upstream, bare relay and every gateway; always stop them all afterwards."""
    relay_cpu = RELAY_CPU if plan.pin else None
    stack = Stack(Processes(tmp), tmp, CLIENT_CPU if plan.pin else None)
    pg = plan.postgres_url if plan.db == "postgres" else None
    try:
        upstream = stack.start_upstream()
        up = upstream.base_url
        targets = [upstream, stack.start_bare(up, relay_cpu)]
        if plan.bare_recording:
            targets.append(stack.start_bare_recording(up, relay_cpu))

        def aibridge(name: str, source: str, **extra: Any) -> None:
            # Every gateway target shares the upstream, core, database and log level.
            options: dict[str, Any] = {"python": sys.executable, "cpu": relay_cpu} | extra
            targets.append(
                stack.start_aibridge(
                    name,
                    source=source,
                    upstream=up,
                    postgres_url=pg,
                    log_level=plan.log_level,
                    **options,
                )
            )

        tree = f"this tree @ {_tree_revision()}"
        aibridge("aibridge", tree)
        if plan.limits:
            # The same tree with every limit set (none reached): the limiter's cost.
            aibridge("aibridge+limits", f"{tree}, every limit set, in-process", limits=True)
        if plan.tracing:
            # The same tree with OpenTelemetry traces on, exported to a sink that answers
            # at once: the cost of making and exporting spans, per sampling ratio.
            sink = stack.start_trace_sink()
            for ratio in plan.tracing_ratios:
                aibridge(
                    "aibridge+tracing" if ratio == 1 else f"aibridge+tracing@{ratio:g}",
                    f"{tree}, OTEL_TRACES_EXPORTER=otlp, parentbased_traceidratio {ratio:g}",
                    trace_sink=sink,
                    trace_ratio=ratio,
                )
        if plan.limits_redis:
            aibridge(
                "aibridge+limits+redis",
                f"{tree}, every limit set, on Redis",
                limits=True,
                redis_url=plan.limits_redis,
            )
        if plan.ref:
            python, sha = stack.prepare_ref(plan.ref)
            aibridge(
                f"aibridge@{plan.ref}", f"git worktree of {plan.ref} @ {sha[:10]}", python=python
            )
        if plan.workers > 1:
            aibridge(
                f"aibridge-w{plan.workers}",
                f"this tree, serve --workers {plan.workers}",
                cpu=None,
                workers=plan.workers,
            )
        yield stack, targets
    finally:
        stack.close()


def describe(target: Target) -> str:
    """How a target was started (for the header)."""
    if target.kind == "direct":
        return "load generator -> fake upstream"
    if target.name == "bare+recording":
        return "the bare relay plus exact recording (journal, batches, SQLite writer thread)"
    if target.kind == "bare":
        return "aiohttp relay, one shared ClientSession"
    return target.source


def run_benchmark(plan: Plan) -> dict[str, Any]:
    """Run every cell against every target; return the full result document."""
    started = time.monotonic()
    load_before = list(os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="aibridge-bench-"))
    cells: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    ttfb: list[dict[str, Any]] = []
    try:
        with started_stack(plan, tmp) as (stack, targets):
            runner = LoadRunner(
                stack.procs,
                CLIENT_CPU if plan.pin else None,
                plan.generator,
                tmp,
                plan.max_requests,
                wrk_version() or "",
            )
            for target in targets:
                for api_name in plan.apis:
                    for mode in MODES:
                        check_target(target, APIS[api_name], mode == "stream")
            warm_up(runner, plan, targets)
            gateway = next(t for t in targets if t.kind == "aibridge")
            memory["rss_after_warmup_mib"] = round(rss_mib(gateway.relay_pids()), 1)
            for step in schedule(plan, targets):
                cell = measure(runner, plan, step)
                cells.append(cell)
                print(progress(cell), file=sys.stderr, flush=True)
            memory["rss_after_cells_mib"] = round(rss_mib(gateway.relay_pids()), 1)
            if plan.soak_seconds > 0:
                memory.update(soak(runner, plan, gateway, memory["rss_after_cells_mib"]))
            if plan.ttfb_seconds > 0:
                ttfb = measure_ttfb(runner, plan, targets)
            described = [{"name": t.name, "describe": describe(t)} for t in targets]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = report.summarize(cells)
    gateways = [t["name"] for t in described if t["name"].startswith(("aibridge", "bare+"))]
    many = f"aibridge-w{plan.workers}"
    doc: dict[str, Any] = {
        "machine": machine_description(plan.pin, plan.workers),
        "load_average": {"before": load_before, "after": list(os.getloadavg())},
        "plan": {**asdict(plan), "postgres_url": masked_url(plan.postgres_url)},
        "generator": runner.label,
        "targets": described,
        "cells": cells,
        "summary": summary,
        "rows": report.compare(summary, [g for g in gateways if g != many]),
        "scaling": report.scaling(summary, "aibridge", many) if plan.workers > 1 else [],
        "ttfb": ttfb,
        "memory": memory,
        "notes": plan.notes,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    return doc


def masked_url(url: str | None) -> str | None:
    """``url`` with its password replaced, for output (never print a credential)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def warm_up(runner: LoadRunner, plan: Plan, targets: list[Target]) -> None:
    """Warm every relay (connection pools, caches, code paths) before the first cell."""
    if plan.initial_warmup <= 0:
        return
    for target in targets:
        if target.kind == "direct":
            continue
        for api_name in plan.apis:
            api = APIS[api_name]
            for mode in plan.modes:
                runner.run(
                    target.url(api),
                    target.headers(api),
                    api,
                    mode == "stream",
                    16,
                    plan.initial_warmup,
                )


def soak(runner: LoadRunner, plan: Plan, gateway: Target, rss_before: float) -> dict[str, Any]:
    """The memory soak: c=64 on the first gateway, RSS before and after."""
    api = APIS[plan.apis[0]]
    result = runner.run(
        gateway.url(api),
        gateway.headers(api),
        api,
        plan.modes[0] == "stream",
        SOAK_CONCURRENCY,
        plan.soak_seconds,
    )
    rss_after = round(rss_mib(gateway.relay_pids()), 1)
    growth = round(rss_after - rss_before, 1)
    return {
        "soak_requests": result["requests"],
        "soak_errors": result["errors"],
        "rss_after_soak_mib": rss_after,
        "soak_growth_mib": growth,
        "flat": growth < report.SOAK_GROWTH_LIMIT_MIB,
    }


def measure_ttfb(runner: LoadRunner, plan: Plan, targets: list[Target]) -> list[dict[str, Any]]:
    """Stream TTFB at c=1 with the Python client (wrk cannot see the first byte)."""
    out = []
    for api_name in plan.apis:
        api = APIS[api_name]
        for target in targets:
            if target.workers > 1:
                continue
            result = runner.run(
                target.url(api),
                target.headers(api),
                api,
                True,
                1,
                plan.ttfb_seconds,
                kind="python",
            )
            out.append(
                {
                    "api": api.name,
                    "target": target.name,
                    "ttfb_p50_ms": result["ttfb_p50_ms"],
                    "ttfb_p99_ms": result["ttfb_p99_ms"],
                    "requests": result["requests"],
                    "errors": result["errors"],
                }
            )
    return out


# ------------------------------------------------------------------------------ CLI


def _csv_ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def _csv_floats(value: str) -> list[float]:
    ratios = [float(v) for v in value.split(",") if v.strip()]
    if not ratios or any(not 0 <= r <= 1 for r in ratios):
        raise argparse.ArgumentTypeError("ratios from 0 to 1, comma-separated")
    return ratios


def _csv_choice(choices: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        for item in items:
            if item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=(
            "Benchmark the aibridge data plane against a bare aiohttp relay and the upstream "
            "itself; prints Markdown tables (req/s, CPU µs/req, p50/p99, ratios, goals)."
        ),
    )
    p.add_argument("--quick", action="store_true", help="smoke run, under ~40 s")
    p.add_argument("--duration", type=float, help="measured seconds per cell (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each cell (default 1)")
    p.add_argument("--concurrency", type=_csv_ints, help="e.g. 1,16 (default)")
    p.add_argument("--apis", type=_csv_choice(tuple(APIS)), default=list(APIS))
    p.add_argument("--modes", type=_csv_choice(MODES), default=list(MODES))
    p.add_argument("--repeat", type=int, default=1, help="run every cell N times; medians")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="with --repeat: repetitions outermost, relay order flipped each time",
    )
    p.add_argument("--soak", type=float, help="memory soak seconds at c=64 (default 20)")
    p.add_argument("--ttfb", type=float, help="stream TTFB probe seconds per target (default 2)")
    p.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when installed, else the Python client",
    )
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="server to create a temporary database on (dropped afterwards)",
    )
    p.add_argument("--workers", type=int, default=1, help="also run `aibridge serve --workers N`")
    p.add_argument("--ref", help="also run aibridge from this git ref (A/B, interleaved)")
    p.add_argument(
        "--limits",
        action="store_true",
        help="also run aibridge with every limit set (none reached): the limiter's cost",
    )
    p.add_argument(
        "--limits-redis",
        metavar="URL",
        help="also run aibridge with every limit set, shared in this Redis",
    )
    p.add_argument(
        "--bare-recording",
        action="store_true",
        help="also run the bare relay plus exact recording and nothing else (bench.roles "
        "bare-recording): what recording alone costs over the bare relay",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="every gateway's log level; info writes one access line per request (the "
        "production default), to a log file (default: warning, no access line)",
    )
    p.add_argument(
        "--tracing",
        action="store_true",
        help="also run aibridge with OpenTelemetry traces on, exported to a local sink",
    )
    p.add_argument(
        "--tracing-ratios",
        type=_csv_floats,
        default=[1.0],
        help="with --tracing: one gateway per sampling ratio, e.g. 1,0.1 (default 1)",
    )
    p.add_argument("--max-requests", type=int, default=500_000, help="Python client cap")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--json", type=Path, help="write every number here")
    return p


def plan_from_args(ns: argparse.Namespace) -> Plan:
    """Defaults (full or quick) filled in, generator and pinning resolved."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    can_pin = {RELAY_CPU, CLIENT_CPU} <= affinity
    generator = ns.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    elif generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
    quick = ns.quick

    def pick(value: float | None, full: float, short: float) -> float:
        return value if value is not None else (short if quick else full)

    plan = Plan(
        apis=ns.apis,
        modes=ns.modes,
        concurrencies=ns.concurrency or [1, 16],
        duration=pick(ns.duration, 5.0, 1.0),
        warmup=pick(ns.warmup, 1.0, 0.0),
        initial_warmup=0.0 if quick else 1.0,
        repeat=max(1, ns.repeat),
        interleave=ns.interleave,
        soak_seconds=pick(ns.soak, 20.0, 1.0),
        ttfb_seconds=pick(ns.ttfb, 2.0, 0.0),
        generator=generator,
        pin=can_pin and not ns.no_pin,
        db=ns.db,
        postgres_url=ns.postgres_url if ns.db == "postgres" else None,
        workers=max(1, ns.workers),
        ref=ns.ref,
        max_requests=ns.max_requests,
        limits=ns.limits,
        limits_redis=ns.limits_redis,
        bare_recording=ns.bare_recording,
        log_level=ns.log_level,
        tracing=ns.tracing,
        tracing_ratios=ns.tracing_ratios,
    )
    add_notes(plan)
    return plan


def add_notes(plan: Plan) -> None:
    """Caveats printed under the tables."""
    if plan.generator == "python":
        plan.notes.append(
            "the Python client shares CPU 1 with the upstream: it caps `direct` and "
            "flatters every ratio; install wrk for comparable numbers."
        )
    if not plan.pin:
        plan.notes.append("processes are not pinned: relays compete with the load generator.")
    if plan.workers > 1:
        plan.notes.append(
            f"the --workers {plan.workers} scaling figure is not clean on this machine: "
            f"aibridge-w{plan.workers} runs on every CPU, sharing CPU {CLIENT_CPU} with the "
            "upstream and the load generator, while the 1-worker gateway has CPU "
            f"{RELAY_CPU} to itself. The issue's ≥ {report.SCALING_GOAL}x needs the load "
            "generator and upstream on a separate core budget (a 4+ core machine); here "
            "compare CPU µs/req (workers should not cost more per request) and read the "
            "req/s ratio as a lower bound."
        )
    if plan.repeat > 1 and not plan.interleave:
        plan.notes.append("repeats ran back to back (no --interleave).")


def _json_safe(value: Any) -> Any:
    """``value`` with NaN (a cell without successful requests) as null: strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ns = build_parser().parse_args(argv)
    plan = plan_from_args(ns)
    # SIGTERM/SIGHUP would end the process without running ``finally`` blocks, leaving
    # the children (each in its own session) behind: turn them into SystemExit.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    doc = run_benchmark(plan)
    print(report.render(doc))
    print(f"\nwall time {doc['wall_seconds']} s")
    if ns.json is not None:
        ns.json.write_text(json.dumps(_json_safe(doc), indent=2, default=str) + "\n")
        print(f"results written to {ns.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
