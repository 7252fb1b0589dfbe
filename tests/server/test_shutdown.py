"""Shutdown of the assembled services (``running_services``) when the database is down or
hangs: every component is still closed, nothing queued is lost, and it ends in bounded
time. The subprocess version with 3,000 requests is in tests/system/test_crash_recovery.py."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg
import pytest
from yarl import URL

from aibridge.config import Settings
from aibridge.recording import (
    SPILL_FILE_NAME,
    InterceptionEnded,
    InterceptionStarted,
    record_from_json,
)
from aibridge.recording.spill import read_lines
from aibridge.server import running_services
from aibridge.store.types import utcnow
from aibridge.testing.gateway import announced_admin_token
from aibridge.testing.outage import pg_outage
from aibridge.tokens import parse_token

TIMEOUT = 60.0
# Quick retries so that the outage is noticed at once; the close timeout stays the default.
RECORDER = {"retry_initial": 0.02, "retry_max": 0.1, "ping_timeout": 1.0}


async def on_message(_payload: bytes, _error: Exception | None) -> None:
    """A pub/sub callback that does nothing."""


def spilled(data_dir: Path) -> list[bytes]:
    """Every line of the spill file and of any claimed replay file."""
    lines: list[bytes] = []
    for path in sorted(data_dir.glob(SPILL_FILE_NAME + "*")):
        if not path.name.endswith(".rejected"):
            lines += read_lines(path, 0, 1_000_000)[0]
    return lines


async def test_shutdown_with_the_database_down_closes_everything_and_spills_the_queue(
    pg_url: str, tmp_path: Path
) -> None:
    announced: list[str] = []
    settings = Settings(database_url=pg_url, data_dir=tmp_path)
    async with contextlib.AsyncExitStack() as outage:
        async with asyncio.timeout(3 * TIMEOUT):
            async with running_services(
                settings, environ={}, announce=announced.append, recorder_options=RECORDER
            ) as services:
                recorder = services.recorder
                assert recorder is not None
                # A key used since the last flush: shutdown will try to store its last use.
                actor = await services.authenticator.authenticate(announced_admin_token(announced))
                await outage.enter_async_context(pg_outage(pg_url))
                started = [
                    InterceptionStarted(
                        initiator_id=actor.user_id, provider="openai", provider_name="p", model="m"
                    )
                    for _ in range(20)
                ]
                for rec in started:
                    recorder.record(rec)
                    recorder.record(InterceptionEnded(id=rec.id, ended_at=utcnow()))
        # Every component was closed although the database refused each of them: the
        # queue went to the spill file, upstream clients and pub/sub are closed.
        assert recorder.queue_depth == 0 and recorder.in_flight == 0
        records = [record_from_json(line) for line in spilled(tmp_path)]
        assert sorted((r.kind, r.id) for r in records) == sorted(
            [("interception_start", r.id) for r in started]
            + [("interception_end", r.id) for r in started]
        )
        with pytest.raises(RuntimeError, match="closed"):
            services.upstream.for_url(URL("http://127.0.0.1:9/v1"))
        with pytest.raises(RuntimeError, match="closed"):
            await services.pubsub.subscribe("anything", on_message)


async def test_shutdown_is_bounded_when_the_database_hangs_on_the_last_used_flush(
    pg_url: str, tmp_path: Path
) -> None:
    announced: list[str] = []
    settings = Settings(database_url=pg_url, data_dir=tmp_path)
    blocker = await asyncpg.connect(pg_url)
    try:
        loop = asyncio.get_running_loop()
        async with (
            asyncio.timeout(3 * TIMEOUT),
            running_services(
                settings, environ={}, announce=announced.append, recorder_options=RECORDER
            ) as services,
        ):
            token = announced_admin_token(announced)
            await services.authenticator.authenticate(token)
            # Hold the key's row: the last-used UPDATE at shutdown waits for this lock
            # for as long as we hold it (a database that hangs, for that statement).
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(
                "SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE", parse_token(token)[0]
            )
            stopping = loop.time()
        took = loop.time() - stopping
        await tx.rollback()
    finally:
        await blocker.close()
    assert took < 8.0, f"shutdown took {took:.1f}s with the database hanging"
    with pytest.raises(RuntimeError, match="closed"):
        services.upstream.for_url(URL("http://127.0.0.1:9/v1"))
