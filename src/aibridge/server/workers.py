"""``aibridge serve --workers N``: several processes sharing one listen port.

The parent prepares the database once (migrations, first admin, env seeding), then
starts N worker processes that bind the same port with ``SO_REUSEPORT`` so the kernel
spreads connections across them. Every worker is a full gateway: configuration
changes reach all of them through PostgreSQL ``LISTEN/NOTIFY`` (or, on SQLite, a
one-second config-version poll). A worker that crashes is restarted; one that dies
during start-up stops the whole server with its exit code.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from aibridge.config import Settings
from aibridge.eventloop import run
from aibridge.server.runner import StartupError, serve_forever
from aibridge.telemetry import setup_logging

log = logging.getLogger(__name__)

# A worker that exits sooner than this after starting is treated as a start-up failure
# (bad port, bad database) rather than a crash worth restarting.
STARTUP_GRACE = 5.0
# The exit status of a worker whose start-up failed (sysexits' EX_CONFIG): it says so
# however long the start-up took (spawning and importing can take longer than the
# grace on a loaded machine), so such a worker is never restarted in a loop.
EXIT_STARTUP_FAILED = 78


def _worker_main(settings_json: str, index: int) -> None:
    settings = Settings.model_validate_json(settings_json)
    setup_logging(
        settings.log_level,
        settings.log_format,
        bad_request_log_interval=settings.bad_request_log_interval,
        levels=settings.logger_levels(),
        secrets=settings.log_secrets(),
    )
    logging.getLogger(__name__).info("worker starting", extra={"worker": index})
    try:
        run(serve_forever(settings.for_workers(), reuse_port=True, worker=index))
    except StartupError as exc:
        # As ``aibridge serve`` reports it; the exit code stops the supervisor.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_STARTUP_FAILED)


def run_workers(settings: Settings) -> int:
    """Start and supervise ``settings.workers`` processes; returns the exit code."""
    ctx = multiprocessing.get_context("spawn")
    payload = settings.model_dump_json()
    procs: dict[int, tuple[BaseProcess, float]] = {}
    stopping = False

    def start(index: int) -> None:
        proc = ctx.Process(
            target=_worker_main, args=(payload, index), name=f"aibridge-worker-{index}"
        )
        proc.start()
        procs[index] = (proc, time.monotonic())

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("stopping workers", extra={"signal": signal.Signals(signum).name})
        stopping = True
        for proc, _ in procs.values():
            if proc.is_alive():
                proc.terminate()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        for index in range(settings.workers):
            start(index)
        log.info("started workers", extra={"workers": settings.workers, "listen": settings.listen})
        while procs:
            sentinels = {proc.sentinel: index for index, (proc, _) in procs.items()}
            ready = multiprocessing.connection.wait(list(sentinels), timeout=1.0)
            for sentinel in ready:
                assert isinstance(sentinel, int)
                index = sentinels[sentinel]
                proc, started = procs.pop(index)
                proc.join()
                code = proc.exitcode or 0
                if stopping:
                    continue
                if code == EXIT_STARTUP_FAILED or time.monotonic() - started < STARTUP_GRACE:
                    log.error(
                        "worker failed during start-up; stopping",
                        extra={"worker": index, "exit_code": code},
                    )
                    exit_code = 1 if code in (0, EXIT_STARTUP_FAILED) else code
                    request_stop(signal.SIGTERM, None)
                    continue
                log.warning("worker exited; restarting", extra={"worker": index, "exit_code": code})
                start(index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc, _ in procs.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return exit_code
