"""The SQLite sink's writer thread on its own: CPU per request of a batch.

    .venv/bin/python -m bench.sinkbench --requests 4000 --per-batch 8

Writes ``--requests`` interceptions shaped like the bench's (a start, a token usage, a
prompt and an end each) in batches of ``--per-batch`` requests' records, as the recorder
hands them over under load, into a migrated SQLite file, and prints the writer thread's
CPU per request (``time.thread_time`` around each batch, on the thread) and the wall time.
``--split`` writes each request's end in the batch after its start (the usual case at
c=16: the ends of the requests in flight arrive with the starts of the next ones).

What-ifs, to size changes outside the sink:
``--prefill N`` writes N requests first (a gateway's database grows: random-key index
inserts touch more distinct pages as it does); ``--time-ordered-ids all`` gives every
record a time-ordered id (``ids.new_uuid7``: milliseconds first) instead of a random
UUID4, so the primary-key and ``interception_id`` indexes append instead of inserting at
random places (what the gateway does since round 12); ``children`` does it for all but
the interception's own id (the gateway in round 11); ``--no-foreign-keys`` turns off
SQLite's foreign-key checks on the writer's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aibridge.ids import new_uuid7
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Record,
    TokenUsageRecord,
)
from aibridge.recording.sqlite_sink import SqliteSink
from aibridge.store.types import utcnow
from aibridge.testing.databases import migrated_engine, sqlite_file_url


def request_records(
    user: uuid.UUID, new_id: Any = uuid.uuid4, start_id: Any = None
) -> tuple[list[Record], InterceptionEnded]:
    """One bench request's records before its end, and its end (ids from ``new_id``, the
    interception's from ``start_id``, default ``new_id``)."""
    start = InterceptionStarted(
        id=(start_id or new_id)(),
        initiator_id=user,
        provider="openai",
        provider_name="bench-openai",
        model="gpt-5",
        client="unknown",
        user_agent="wrk",
        credential_hint="sk-…abcd",
        replica_id="0123456789abcdef:0",
    )
    usage = TokenUsageRecord(
        id=new_id(),
        interception_id=start.id,
        provider_response_id="chatcmpl-123",
        provider_model="gpt-5",
        input=12,
        output=34,
        cost_pusd=1234,
        created_at=utcnow(),
    )
    prompt = PromptRecord(
        id=new_id(), interception_id=start.id, prompt="say hello", created_at=utcnow()
    )
    return [start, usage, prompt], InterceptionEnded(id=start.id)


def _no_foreign_keys(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys=OFF")


async def run(
    requests: int,
    per_batch: int,
    split: bool,
    *,
    prefill: int = 0,
    time_ordered: str = "",
    foreign_keys: bool = True,
) -> None:
    """Write the batches and print the writer thread's CPU per request."""
    new_id = new_uuid7 if time_ordered else uuid.uuid4
    start_id = uuid.uuid4 if time_ordered == "children" else new_id
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        async with migrated_engine(sqlite_file_url(directory)) as engine:
            sink = SqliteSink(
                directory / "aibridge.db",
                engine.dialect,
                on_connect=None if foreign_keys else _no_foreign_keys,
            )
            user = uuid.uuid4()
            for _ in range(prefill // 250):
                fill: list[Record] = []
                for _ in range(250):
                    records, end = request_records(user, new_id, start_id)
                    fill += [*records, end]
                await sink.write(fill)
            cpu = [0.0]
            inner = sink._write_sync

            def timed(records: list[Record]) -> Any:
                began = time.thread_time()
                try:
                    return inner(records)
                finally:
                    cpu[0] += time.thread_time() - began

            sink._write_sync = timed  # type: ignore[method-assign]
            previous_ends: list[Record] = []
            wall = time.perf_counter()
            for _ in range(requests // per_batch):
                batch: list[Record] = []
                ends: list[Record] = []
                for _ in range(per_batch):
                    records, end = request_records(user, new_id, start_id)
                    batch += records
                    ends.append(end)
                if split:
                    batch += previous_ends
                    previous_ends = ends
                else:
                    batch += ends
                assert await sink.write(batch) == []
            if previous_ends:
                await sink.write(previous_ends)
            wall = time.perf_counter() - wall
            await sink.close()
    done = requests // per_batch * per_batch
    what = [f"{per_batch} per batch"]
    what += ["ends split"] * split + [f"after {prefill}"] * bool(prefill)
    what += [f"time-ordered ids ({time_ordered})"] * bool(time_ordered)
    what += ["no foreign keys"] * (not foreign_keys)
    print(
        f"{done} requests, {', '.join(what)}: "
        f"writer thread {cpu[0] / done * 1e6:.1f} µs CPU/request, "
        f"wall {wall / done * 1e6:.1f} µs/request"
    )


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--per-batch", type=int, default=8)
    parser.add_argument("--split", action="store_true")
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument(
        "--time-ordered-ids",
        choices=["all", "children"],
        help="all: every record's (the gateway since round 12); children: every record's "
        "but the interception's own (round 11)",
    )
    parser.add_argument("--no-foreign-keys", action="store_true")
    args = parser.parse_args()
    asyncio.run(
        run(
            args.requests,
            args.per_batch,
            args.split,
            prefill=args.prefill,
            time_ordered=args.time_ordered_ids or "",
            foreign_keys=not args.no_foreign_keys,
        )
    )


if __name__ == "__main__":
    main()
