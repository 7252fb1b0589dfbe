"""``aibridge records prune|export|import``: the record lifecycle by hand.

Export streams: records are read in keyset batches and written as they come, so memory
stays flat whatever the number of records. Progress bars go to stderr and only show on a
terminal (click hides them otherwise), so pipes and files get the data alone.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import click
import orjson

from aibridge.cli import main
from aibridge.cli.common import (
    CLIFailure,
    data_dir_option,
    database_option,
    fail,
    open_store,
    run_command,
    settings_from_flags,
)
from aibridge.files import open_private
from aibridge.store.interceptions import InterceptionFilter, parse_time
from aibridge.store.records_io import (
    IMPORT_BATCH,
    INTERCEPTIONS,
    RecordError,
    count_records,
    import_batch,
    iter_records,
    parse_record,
)
from aibridge.store.retention import PruneResult, count_older, prune_older
from aibridge.store.types import utcnow

AGE = re.compile(r"^\s*(\d+)\s*([wdhm])\s*$")
AGE_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_tokens",
)
CSV_COLUMNS = (
    *(str(c.name) for c in INTERCEPTIONS.columns),
    "username",
    *TOKEN_COLUMNS,
    "cost_pusd",
    "prompts",
    "tool_calls",
)
"""One CSV row per interception: its columns, its summed usage and child counts."""


def parse_age(value: str) -> timedelta:
    """``30d``, ``12h``, ``2w`` or ``90m`` as a duration; ValueError naming the format."""
    match = AGE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an age like 30d, 12h, 2w or 90m")
    return timedelta(**{AGE_UNITS[match.group(2)]: int(match.group(1))})


def _time(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        fail(f"--{name} {value!r} is not a date (2025-01-31) or RFC 3339 time", code=2)


@main.group()
def records() -> None:
    """Delete, export and import recorded interceptions (with their prompts, tool calls
    and token usage).

    The gateway itself deletes records older than AIBRIDGE_RETENTION_DAYS (default 60;
    0 keeps them forever) every AIBRIDGE_RETENTION_INTERVAL_SECONDS (default 3600).
    """


@records.command()
@click.option(
    "--older-than",
    required=True,
    help="Delete interceptions started more than this long ago: 30d, 12h, 2w, 90m.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@database_option
@data_dir_option
def prune(older_than: str, dry_run: bool, database_url: str, data_dir: str) -> None:
    """Delete old interceptions with their prompts, tool calls and usage, in small
    batches (requests keep being recorded meanwhile); print how many were deleted."""
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        fail(f"--older-than {exc}", code=2)
    settings = settings_from_flags(database_url, data_dir)
    before = utcnow() - age

    async def go() -> tuple[int, PruneResult | None]:
        async with open_store(settings) as (sessions, _enc, _url):
            async with sessions() as session:
                total = await count_older(session, before)
            if dry_run or not total:
                return total, None
            with _progress(total, "Deleting") as bar:
                result = await prune_older(
                    sessions, before, on_batch=lambda b: bar.update(b.interceptions)
                )
            return total, result

    total, result = run_command(go(), "records prune")
    when = before.replace(microsecond=0).isoformat()
    if result is None:
        verb = "Would delete" if dry_run else "Deleted"
        click.echo(f"{verb} {total} interceptions started before {when}.")
        return
    details = ", ".join(f"{n} {t}" for t, n in result.deleted.items() if t != "interceptions")
    click.echo(f"Deleted {result.interceptions} interceptions started before {when} ({details}).")


class _NoBar:
    """Stands in for a progress bar when stderr is not a terminal."""

    def update(self, n: int) -> None:
        """Nothing to draw."""


@contextmanager
def _progress(total: int, label: str) -> Iterator[Any]:
    # Only on a terminal: in a pipe or a log a bar is noise (click would still print
    # its label).
    if not sys.stderr.isatty():
        yield _NoBar()
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar


@contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    # Records hold prompts: an export file is created 0600 like the gateway's own files.
    if not path or path == "-":
        yield sys.stdout
        return
    fd = open_private(Path(path), os.O_WRONLY | os.O_TRUNC)
    with open(fd, "w", encoding="utf-8", newline="") as handle:
        yield handle


def _csv_row(record: dict[str, Any]) -> list[Any]:
    usage = record["token_usages"]
    row: dict[str, Any] = {c.name: record[c.name] for c in INTERCEPTIONS.columns}
    row["metadata"] = orjson.dumps(record["metadata"]).decode()
    row["username"] = record["username"]
    for column in TOKEN_COLUMNS:
        row[column] = sum(u[column] for u in usage)
    costs = [u["cost_pusd"] for u in usage]
    row["cost_pusd"] = None if any(c is None for c in costs) else sum(costs)
    row["prompts"] = len(record["user_prompts"])
    row["tool_calls"] = len(record["tool_usages"])
    return ["" if row[c] is None else row[c] for c in CSV_COLUMNS]


@records.command()
@click.option("--since", default="", help="Only interceptions started at/after this date or time.")
@click.option("--until", default="", help="Only interceptions started before this date or time.")
@click.option("--user", default="", help="Only this user (username or id).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="jsonl: one full record per line (prompts, tool calls, usage; importable). "
    "csv: one row per interception with summed usage.",
)
@click.option(
    "--output", "-o", default="", help="Write to this file (created 0600); default stdout."
)
@database_option
@data_dir_option
def export(
    since: str, until: str, user: str, fmt: str, output: str, database_url: str, data_dir: str
) -> None:
    """Stream interceptions, oldest first, without loading them all into memory.

    Dates are 2025-01-31 (UTC midnight) or RFC 3339 times. A progress bar shows on a
    terminal; the count goes to stderr at the end.
    """
    f = InterceptionFilter(
        user=user or None, since=_time("since", since), until=_time("until", until)
    )
    settings = settings_from_flags(database_url, data_dir)

    async def go(out: IO[str]) -> int:
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        written = 0
        async with open_store(settings) as (sessions, _enc, _url):
            show = sys.stderr.isatty()
            total = 0
            if show:
                async with sessions() as session:
                    total = await count_records(session, f)
            with _progress(total, "Exporting") as bar:
                async for record in iter_records(sessions, f):
                    if writer is not None:
                        writer.writerow(_csv_row(record))
                    else:
                        out.write(orjson.dumps(record).decode())
                        out.write("\n")
                    written += 1
                    bar.update(1)
        return written

    with _output(output) as out:
        written = run_command(go(out), "records export")
    where = output if output and output != "-" else "stdout"
    click.echo(f"Exported {written} interceptions to {where}.", err=True)


@records.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@database_option
@data_dir_option
def import_(file: str, database_url: str, data_dir: str) -> None:
    """Import a JSONL file written by `aibridge records export --format jsonl`.

    Interceptions already in the database are skipped (with their children), so the same
    file can be imported twice. A bad line stops the import with its line number; the
    batches before it stay imported.
    """
    settings = settings_from_flags(database_url, data_dir)

    async def go(lines: IO[str]) -> tuple[int, int]:
        imported = skipped = 0
        async with open_store(settings) as (sessions, _enc, _url):
            pending: list[Any] = []
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    pending.append(parse_record(orjson.loads(line)))
                except (orjson.JSONDecodeError, RecordError) as exc:
                    raise CLIFailure(f"{file} line {number}: {exc}", code=2) from exc
                if len(pending) >= IMPORT_BATCH:
                    done = await _write(sessions, pending)
                    imported, skipped = imported + done[0], skipped + done[1]
                    pending = []
            done = await _write(sessions, pending)
        return imported + done[0], skipped + done[1]

    if file == "-":
        imported, skipped = run_command(go(sys.stdin), "records import")
    else:
        with open(file, encoding="utf-8") as handle:
            imported, skipped = run_command(go(handle), "records import")
    click.echo(f"Imported {imported} interceptions; skipped {skipped} already present.")


async def _write(sessions: Any, pending: list[Any]) -> tuple[int, int]:
    async with sessions() as session, session.begin():
        return await import_batch(session, pending)


__all__ = ["parse_age", "records"]
