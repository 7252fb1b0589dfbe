"""Profile the gateway under load: ``py-spy record`` on ``aibridge serve`` while the load
generator drives one cell.

    .venv/bin/python -m bench.profile --api openai --mode blocking --concurrency 16 \
        --duration 10 --out /tmp/prof-blocking

Starts the fake upstream and one gateway from this tree (pinned like ``bench.run``: the
gateway on CPU 0, the upstream and the load generator on CPU 1), warms it up, then runs
the load for ``--duration`` seconds with ``py-spy record`` attached to the gateway, and
writes ``<out>.txt`` (collapsed stacks, one line each: grep them, or feed them to any
flame-graph tool). ``--top N`` prints the N functions with the
most samples, self and total. ``--log-level info`` runs the gateway with its access log on
(the production default; ``bench.run`` runs it at ``warning``).

py-spy is a development tool, not a dependency of the project: ``pip install py-spy``
into the venv first (it needs ptrace rights on the gateway: root, or
``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import APIS, CLIENT_CPU, RELAY_CPU
from bench.load import LoadRunner, wrk_version
from bench.procs import Processes, cpu_seconds, thread_cpu_seconds
from bench.stack import Stack, check_target


def _py_spy() -> str:
    """The py-spy executable (beside this interpreter first)."""
    here = Path(sys.executable).with_name("py-spy")
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: pip install py-spy into this venv")
    return found


def top_functions(collapsed: Path, count: int) -> str:
    """The ``count`` frames with the most samples, by self and by total (inclusive)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        weight = int(n)
        samples += weight
        frames = stack.split(";")
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    out = [f"{samples} samples", "", "self %  frame"]
    out += [f"{100 * n / samples:6.2f}  {f}" for f, n in own.most_common(count)]
    out += ["", "total %  frame"]
    out += [f"{100 * n / samples:6.2f}  {f}" for f, n in total.most_common(count)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run one profiled cell (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--api", choices=sorted(APIS), default="openai")
    parser.add_argument("--mode", choices=("blocking", "stream"), default="blocking")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10, help="profiled seconds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--log-level", default="warning", help="the gateway's log level")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", default="/tmp/aibridge-profile")
    parser.add_argument("--idle", action="store_true", help="also record idle frames")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="record with Linux perf instead of py-spy (kernel and native frames)",
    )
    parser.add_argument(
        "--gil",
        action="store_true",
        help="only samples of the thread holding the GIL (a thread waiting for it is "
        "otherwise counted as busy at the line where it waits)",
    )
    parser.add_argument("--ref", help="profile aibridge from this git ref instead (a worktree)")
    ns = parser.parse_args(argv)
    api = APIS[ns.api]
    stream = ns.mode == "stream"
    tmp = Path(tempfile.mkdtemp(prefix="aibridge-profile-"))
    stack = Stack(Processes(tmp), tmp, CLIENT_CPU)
    out = Path(ns.out)
    try:
        upstream = stack.start_upstream()
        python, source = sys.executable, "this tree"
        if ns.ref:
            python, sha = stack.prepare_ref(ns.ref)
            source = f"{ns.ref} @ {sha[:10]}"
        gateway = stack.start_aibridge(
            "aibridge",
            python=python,
            source=source,
            upstream=upstream.base_url,
            cpu=RELAY_CPU,
            log_level=ns.log_level,
        )
        check_target(gateway, api, stream)
        runner = LoadRunner(stack.procs, CLIENT_CPU, "auto", tmp, 10**9, wrk_version() or "")
        url, headers = gateway.url(api), gateway.headers(api)
        runner.run(url, headers, api, stream, ns.concurrency, ns.warmup)
        assert gateway.pid is not None
        if ns.perf:
            # Kernel and native frames too (py-spy sees only Python's): where a system
            # call's time goes. No Python frames unless the interpreter has perf maps.
            raw = out.with_suffix(".perf")
            spy = ["perf", "record", "-F", str(ns.rate), "-g", "--pid", str(gateway.pid)]
            spy += ["-o", str(raw), "--", "sleep", str(ns.duration)]
        else:
            raw = out.with_suffix(".txt")
            spy = [_py_spy(), "record", "--pid", str(gateway.pid), "--rate", str(ns.rate)]
            spy += ["--duration", str(ns.duration), "--nonblocking"]
            spy += ["--idle"] if ns.idle else []
            spy += ["--gil"] if ns.gil else []
            spy += ["--format", "raw", "--output", str(raw)]
        recorder = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # py-spy attaches in well under a second; the load outlasts the recording.
        time.sleep(0.5)
        cpu_before = cpu_seconds(gateway.relay_pids())
        threads_before = thread_cpu_seconds(gateway.pid)
        result = runner.run(url, headers, api, stream, ns.concurrency, ns.duration + 1)
        cpu_after = cpu_seconds(gateway.relay_pids())
        threads_after = thread_cpu_seconds(gateway.pid)
        _, err = recorder.communicate(timeout=ns.duration + 60)
        if recorder.returncode != 0:
            print(err.decode(errors="replace"), file=sys.stderr)
            return 1
        cpu = None
        if cpu_before is not None and cpu_after is not None and result["requests"]:
            cpu = round((cpu_after - cpu_before) / result["requests"] * 1e6)
        print(
            f"{gateway.source}: {api.name} {ns.mode} c={ns.concurrency}: "
            f"{result['requests']} requests, "
            f"{result['rps']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
            f"{cpu} µs CPU/req (py-spy attached: slower than bench.run)"
        )
        if result["requests"]:
            for thread, after in sorted(threads_after.items()):
                spent = (after - threads_before.get(thread, 0.0)) / result["requests"] * 1e6
                if spent >= 1:
                    print(f"  thread {thread}: {spent:.0f} µs CPU/req")
        if ns.perf:
            report = ["perf", "report", "-i", str(raw), "--no-children", "--stdio"]
            report += ["--sort", "dso,sym", "-g", "none", "--percent-limit", "0.3"]
            listing = subprocess.run(report, capture_output=True, text=True, check=False)
            print(f"perf data: {raw}\n")
            print("\n".join(listing.stdout.splitlines()[: ns.top + 12]))
        else:
            print(f"collapsed stacks: {raw}\n")
            print(top_functions(raw, ns.top))
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
