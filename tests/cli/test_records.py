"""``aibridge records prune|export|import`` through click's runner (and, for memory, a real
subprocess) against real SQLite files and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from aibridge.cli import main
from aibridge.cli.records import parse_age
from aibridge.testing.databases import migrated_engine
from tests.cli.records_data import seed, snapshot

ROUND_TRIP = 10_000
BIG_EXPORT = 100_000
RSS_LIMIT_KB = 150 * 1024
EXPORT_GROWTH_LIMIT_KB = 40 * 1024
"""What a streaming export may add to the CLI's own peak RSS (batch buffers, caches)."""


def cli(url: str, *args: str) -> Result:
    """Invoke ``aibridge ARGS`` on database ``url``."""
    return CliRunner().invoke(
        main, list(args), env={"AIBRIDGE_DATABASE_URL": url}, catch_exceptions=False
    )


async def _seed(url: str, count: int, **kwargs: object) -> None:
    async with migrated_engine(url) as engine:
        await seed(engine, count, **kwargs)  # type: ignore[arg-type]


async def _snapshot(url: str) -> dict[str, list[dict[str, object]]]:
    async with migrated_engine(url) as engine:
        return await snapshot(engine)


def test_every_records_command_has_help(sqlite_url: str) -> None:
    for args in ([], ["prune"], ["export"], ["import"]):
        result = cli(sqlite_url, "records", *args, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
    assert "--dry-run" in cli(sqlite_url, "records", "prune", "--help").stdout
    assert "jsonl|csv" in cli(sqlite_url, "records", "export", "--help").stdout


def test_ages_parse_and_bad_ones_name_the_format(sqlite_url: str) -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_age(" 12h") == timedelta(hours=12)
    assert parse_age("90m") == timedelta(minutes=90)
    result = CliRunner().invoke(
        main,
        ["records", "prune", "--older-than", "30 days"],
        env={"AIBRIDGE_DATABASE_URL": sqlite_url},
    )
    assert result.exit_code == 2
    assert "like 30d, 12h, 2w or 90m" in result.stderr


def test_prune_dry_run_counts_and_prune_deletes_only_the_old(sqlite_url: str) -> None:
    now = datetime.now(UTC)
    # 30 rows 40.5-69.5 days old (none near the cut-off), 20 rows from the last 20 days.
    start = now - timedelta(days=69, hours=12)
    asyncio.run(_seed(sqlite_url, 30, start=start, step=timedelta(days=1)))
    asyncio.run(
        _seed(sqlite_url, 20, start=now - timedelta(days=20), step=timedelta(days=1), first=100)
    )
    before = asyncio.run(_snapshot(sqlite_url))

    result = cli(sqlite_url, "records", "prune", "--older-than", "45d", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Would delete 25 interceptions started before ")
    assert asyncio.run(_snapshot(sqlite_url)) == before  # nothing deleted

    result = cli(sqlite_url, "records", "prune", "--older-than", "45d")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Deleted 25 interceptions started before ")
    after = asyncio.run(_snapshot(sqlite_url))
    cutoff = now - timedelta(days=45)
    kept = [r for r in before["interceptions"] if r["started_at"] >= cutoff]
    assert after["interceptions"] == kept and len(kept) == 25
    kept_ids = {r["id"] for r in kept}
    for table, rows in before.items():
        if table != "interceptions":
            assert after[table] == [r for r in rows if r["interception_id"] in kept_ids]
    deleted_usages = len(before["token_usages"]) - len(after["token_usages"])
    assert f"{deleted_usages} token_usages" in result.stdout

    result = cli(sqlite_url, "records", "prune", "--older-than", "45d", "--dry-run")
    assert result.stdout.startswith("Would delete 0 interceptions")


@pytest.mark.timeout(300)
def test_export_prune_import_round_trips_every_record(db_url: str, tmp_path: Path) -> None:
    asyncio.run(_seed(db_url, ROUND_TRIP, step=timedelta(seconds=7)))
    before = asyncio.run(_snapshot(db_url))
    assert len(before["interceptions"]) == ROUND_TRIP
    assert all(before[t] for t in before)  # every table has rows to carry over

    out = tmp_path / "records.jsonl"
    result = cli(db_url, "records", "export", "--format", "jsonl", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert f"Exported {ROUND_TRIP} interceptions to {out}." in result.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    lines = out.read_bytes().splitlines()
    assert len(lines) == ROUND_TRIP
    first = orjson.loads(lines[1])  # a record with a prompt (number 1)
    assert first["user_prompts"][0]["prompt"].startswith("prompt 1 ")
    assert first["tool_usages"][0]["tool"] == "read_file"

    result = cli(db_url, "records", "prune", "--older-than", "0m")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Deleted {ROUND_TRIP} interceptions")
    assert all(not rows for rows in asyncio.run(_snapshot(db_url)).values())

    result = cli(db_url, "records", "import", str(out))
    assert result.exit_code == 0, result.output
    assert f"Imported {ROUND_TRIP} interceptions; skipped 0" in result.stdout
    assert asyncio.run(_snapshot(db_url)) == before

    # Again: nothing new, nothing doubled.
    result = cli(db_url, "records", "import", str(out))
    assert f"Imported 0 interceptions; skipped {ROUND_TRIP}" in result.stdout
    assert asyncio.run(_snapshot(db_url)) == before


def test_import_into_a_fresh_sqlite_database_and_csv_and_filters(
    sqlite_url: str, tmp_path: Path
) -> None:
    asyncio.run(_seed(sqlite_url, 300, step=timedelta(hours=1)))
    before = asyncio.run(_snapshot(sqlite_url))
    since, until = "2025-01-02", "2025-01-03T00:00:00Z"
    result = cli(sqlite_url, "records", "export", "--since", since, "--until", until)
    assert result.exit_code == 0, result.output
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [r["started_at"][:10] for r in records] == ["2025-01-02"] * 24
    assert records == sorted(records, key=lambda r: r["started_at"])

    fresh = f"sqlite:///{tmp_path / 'fresh' / 'aibridge.db'}"
    dump = tmp_path / "all.jsonl"
    assert cli(sqlite_url, "records", "export", "-o", str(dump)).exit_code == 0
    result = cli(fresh, "records", "import", str(dump))
    assert result.exit_code == 0, result.output
    assert asyncio.run(_snapshot(fresh)) == before

    result = cli(sqlite_url, "records", "export", "--user", "nobody")
    assert result.exit_code == 0 and result.stdout == ""
    assert "Exported 0 interceptions" in result.stderr

    result = cli(sqlite_url, "records", "export", "--format", "csv", "--until", "2025-01-01T02:00Z")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["input_tokens"] for r in rows] == ["0", "3"]
    assert rows[1]["prompts"] == "1" and rows[1]["tool_calls"] == "1"
    assert rows[0]["prompts"] == "0" and rows[0]["cost_pusd"] == ""  # unpriced
    assert orjson.loads(rows[1]["metadata"]) == {"n": 1, "nested": {"ü": ["✓", 1]}}


def test_import_stops_at_a_bad_line_naming_it(sqlite_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"record_version": 1, "id": "not-a-uuid"}\n')
    result = CliRunner().invoke(
        main, ["records", "import", str(bad)], env={"AIBRIDGE_DATABASE_URL": sqlite_url}
    )
    assert result.exit_code == 2
    assert "line 1" in result.stderr and "interception.id" in result.stderr
    bad.write_text("\n{nope\n")
    result = CliRunner().invoke(
        main, ["records", "import", str(bad)], env={"AIBRIDGE_DATABASE_URL": sqlite_url}
    )
    assert result.exit_code == 2 and "line 2" in result.stderr
    bad.write_text('{"record_version": 9}\n')
    result = CliRunner().invoke(
        main, ["records", "import", str(bad)], env={"AIBRIDGE_DATABASE_URL": sqlite_url}
    )
    assert result.exit_code == 2 and "record_version must be 1" in result.stderr


# Runs the command from a small process and prints its peak RSS. Linux carries the
# pre-exec peak into ru_maxrss, so a child forked straight from this (large) test process
# would report the test's own memory.
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def _peak_rss_kb(args: list[str], url: str) -> tuple[int, int]:
    """Run ``aibridge ARGS`` on ``url``; (exit code, its own peak RSS in KB)."""
    exe = Path(sys.executable).with_name("aibridge")
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(exe), *args],
        env={**os.environ, "AIBRIDGE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=True,
        timeout=500,
    )
    peak, code = done.stdout.split()
    return int(code), int(peak)


@pytest.mark.timeout(600)
def test_exporting_100k_records_stays_under_150mb_rss(sqlite_url: str, tmp_path: Path) -> None:
    # ~1 KB of prompt per record: the export (~230 MB) could not be held in memory.
    asyncio.run(_seed(sqlite_url, BIG_EXPORT, step=timedelta(seconds=1), prompt_bytes=1000))
    out = tmp_path / "big.jsonl"
    code, base = _peak_rss_kb(["records", "export", "--help"], sqlite_url)
    assert code == 0
    code, peak = _peak_rss_kb(["records", "export", "--output", str(out)], sqlite_url)
    assert code == 0
    assert len(out.read_bytes().splitlines()) == BIG_EXPORT
    size = out.stat().st_size
    assert size > 200 * 1024 * 1024  # the data really is larger than any budget here
    print(
        f"peak RSS {peak / 1024:.1f} MB (the CLI alone: {base / 1024:.1f} MB) "
        f"for a {size / 2**20:.0f} MB export"
    )
    assert peak < RSS_LIMIT_KB
    # Most of that is the CLI's imports: what the export itself adds stays small.
    assert peak - base < EXPORT_GROWTH_LIMIT_KB
