"""The retention job on a running gateway: exactly the old records go (clock injected),
requests keep being served and recorded meanwhile, metrics tell what happened, and on
PostgreSQL one replica at a time does the work."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.fakellm import Scenario
from aibridge.recording.retention import RetentionJob, RetentionMetrics
from aibridge.store.db import session_factory
from aibridge.store.locks import held_session_lock
from aibridge.store.retention import RETENTION_LOCK_ID
from aibridge.testing.databases import migrated_engine
from aibridge.testing.openai_sdk import gateway_sdk
from aibridge.testing.replicas import poll
from aibridge.testing.stack import stack
from tests.cli.records_data import USER, seed, snapshot

TIMEOUT = 60.0
OLD = 1200
STEP = timedelta(minutes=24)


def _metric(text: str, name: str) -> float:
    """The value of the sample line starting with ``name`` (``name{labels}`` included)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_retention_deletes_exactly_the_old_rows_while_requests_keep_flowing(
    db_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(now=datetime.now(UTC))
    overrides = {"retention_days": 30}
    async with stack(
        db_url,
        tmp_path,
        clock=clock,
        settings_overrides=overrides,
        default=Scenario.text_reply("ok"),
    ) as s:
        job = s.services.retention
        assert (job.days, job.interval, job.enabled) == (30, 3600.0, True)
        await s.add_provider("openai", "openai")
        # 1,200 records 40 to 20 days old, 24 minutes apart; the first 600 are past 30
        # days (offset half a step, so none sits on the cut-off). All ended: an unended
        # one has a day's grace (tests/store/test_retention_rules.py).
        start = clock.now() - timedelta(days=40) + STEP / 2
        await seed(s.services.engine, OLD, start=start, step=STEP, all_ended=True)
        seeded = await snapshot(s.services.engine)

        sdk = gateway_sdk(s)
        sent = 0
        progressed = asyncio.Condition()
        stop = asyncio.Event()

        async def traffic() -> None:
            nonlocal sent
            while not stop.is_set():
                reply = await sdk.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": "hi"}]
                )
                assert reply.choices[0].message.content == "ok"
                async with progressed:
                    sent += 1
                    progressed.notify_all()

        async def sent_at_least(n: int) -> None:
            async with progressed:
                await progressed.wait_for(lambda: sent >= n)

        async with asyncio.timeout(TIMEOUT):
            flowing = asyncio.create_task(traffic())
            await sent_at_least(2)
            first = await job.run_once()
            # Requests still go through after the deletes.
            await sent_at_least(sent + 2)
            stop.set()
            await flowing
            await s.flush_records()

        assert first is not None and first.interceptions == OLD // 2
        after = await snapshot(s.services.engine)
        kept_seeded = {r["id"] for r in seeded["interceptions"][OLD // 2 :]}
        old_ids = {r["id"] for r in seeded["interceptions"][: OLD // 2]}
        assert {r["id"] for r in after["interceptions"] if r["initiator_id"] == USER} == (
            kept_seeded
        )
        # Every request made meanwhile was recorded and kept.
        live = [r for r in after["interceptions"] if r["initiator_id"] != USER]
        assert len(live) == sent
        for table, rows in seeded.items():
            if table == "interceptions":
                continue
            left = [r for r in after[table] if r["interception_id"] in kept_seeded | old_ids]
            assert left == [r for r in rows if r["interception_id"] in kept_seeded], table
            assert first.deleted[table] == sum(r["interception_id"] in old_ids for r in rows)

        resp = await s.client.get("/metrics")
        text = await resp.text()
        assert _metric(text, 'aibridge_retention_deleted_rows_total{table="interceptions"}') == 600
        assert _metric(text, 'aibridge_retention_runs_total{result="done"}') == 1
        oldest = seeded["interceptions"][OLD // 2]["started_at"]
        assert _metric(text, "aibridge_retention_oldest_record_timestamp_seconds") == (
            oldest.timestamp()
        )

        # Five days later: 300 more seeded records are past 30 days; the live ones stay.
        clock.advance(5 * 86400)
        async with asyncio.timeout(TIMEOUT):
            second = await job.run_once()
        assert second is not None and second.interceptions == 300
        after = await snapshot(s.services.engine)
        assert len([r for r in after["interceptions"] if r["initiator_id"] == USER]) == 300
        assert len([r for r in after["interceptions"] if r["initiator_id"] != USER]) == sent


async def test_the_job_runs_every_interval_and_zero_days_keeps_everything(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with migrated_engine(sqlite_url) as eng:
        now = datetime.now(UTC)
        await seed(eng, 10, start=now - timedelta(days=100, hours=12), step=timedelta(days=1))
        sessions = session_factory(eng)
        keep = RetentionJob(
            eng, sessions, days=0, interval=0.01, metrics=RetentionMetrics(CollectorRegistry())
        )
        keep.start()
        assert not keep.enabled
        await keep.stop()

        metrics = RetentionMetrics(CollectorRegistry())
        job = RetentionJob(eng, sessions, days=95, interval=0.05, metrics=metrics)
        job.start()
        try:

            async def ran() -> bool:
                return metrics.runs.labels("done")._value.get() >= 1

            await poll(ran, TIMEOUT, "a retention pass")
        finally:
            await job.stop()
        rows = (await snapshot(eng))["interceptions"]
        # 100.5..91.5 days old: the 6 older than 95 days are gone.
        assert len(rows) == 4
        assert metrics.deleted.labels("interceptions")._value.get() == 6


async def test_one_replica_at_a_time_on_postgresql(pg_url: str) -> None:
    async with migrated_engine(pg_url) as eng, migrated_engine(pg_url) as other:
        now = datetime.now(UTC)
        await seed(eng, 20, start=now - timedelta(days=90), step=timedelta(hours=1))
        metrics = RetentionMetrics(CollectorRegistry())
        job = RetentionJob(eng, session_factory(eng), days=60, interval=3600, metrics=metrics)
        async with asyncio.timeout(TIMEOUT):
            # Another replica (its own engine, its own connection) holds the lock.
            async with held_session_lock(other, RETENTION_LOCK_ID) as taken:
                assert taken
                assert await job.run_once() is None
                async with held_session_lock(eng, RETENTION_LOCK_ID) as second:
                    assert not second
            assert metrics.runs.labels("skipped")._value.get() == 1
            assert len((await snapshot(eng))["interceptions"]) == 20
            done = await job.run_once()
        assert done is not None and done.interceptions == 20
        assert metrics.runs.labels("done")._value.get() == 1
