"""Fixtures every test folder uses: real databases (a SQLite file and, when configured,
a fresh PostgreSQL database; see aibridge.testing.databases), and the captured exchanges
in tests/fixtures (see the README there)."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.fakellm import Exchange, load_exchanges
from aibridge.testing.clients import close_clients
from aibridge.testing.databases import (
    PG_ENV,
    REQUIRE_PG_ENV,
    configured_admin_url,
    migrated_engine,
    pg_database,
    sqlite_file_url,
)

EXCHANGES_DIR = Path(__file__).resolve().parent / "fixtures"
"""The captured exchanges: ``<api>/<name>.txt``."""


@functools.cache
def captured_exchanges() -> tuple[Exchange, ...]:
    """Every exchange file below :data:`EXCHANGES_DIR`, by name (read once)."""
    return tuple(load_exchanges(EXCHANGES_DIR))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test taking ``exchange`` once per captured exchange, and one taking
    ``stream_exchange`` once per streaming exchange, each named after its file."""
    for argument, streams_only in (("exchange", False), ("stream_exchange", True)):
        if argument in metafunc.fixturenames:
            chosen = [e for e in captured_exchanges() if e.streaming or not streams_only]
            metafunc.parametrize(argument, chosen, ids=[e.name for e in chosen])


@pytest.fixture(autouse=True)
async def close_sdk_clients() -> AsyncIterator[None]:
    """Close the SDK clients a test made (aibridge.testing.clients) on its own event loop:
    one left open would be closed by the next test that closes clients, on another loop."""
    yield
    await close_clients()


@pytest.fixture
def exchanges() -> tuple[Exchange, ...]:
    """Every captured exchange."""
    return captured_exchanges()


@pytest.fixture
def exchanges_dir() -> Path:
    """The folder of the captured exchanges (what ``FakeLLM(fixtures=…)`` takes)."""
    return EXCHANGES_DIR


def require_postgres() -> None:
    """Skip the running test when PostgreSQL is not configured (fail instead in CI)."""
    if configured_admin_url() is None:
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {PG_ENV} is not set")
        pytest.skip(f"PostgreSQL tests need {PG_ENV}=postgresql://user@host:port/db")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (plain ``postgresql://`` URL)."""
    require_postgres()
    async with pg_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in the test's temporary directory."""
    return sqlite_file_url(tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Run the test once on a SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_file_url(tmp_path)
        return
    require_postgres()
    async with pg_database() as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each backend."""
    async with migrated_engine(db_url) as eng:
        yield eng


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how busy the machine was: a slow or timed-out run on a loaded machine reads
    differently from one on an idle machine (CI shares its cores with other services)."""
    try:
        load = os.getloadavg()
    except OSError:
        return
    cores = os.cpu_count() or 1
    terminalreporter.write_line(
        f"machine load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {cores} cores"
    )
    if load[1] > cores:
        busiest = subprocess.run(
            ["ps", "-eo", "pcpu,etime,comm", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()[:8]
        for line in busiest:
            terminalreporter.write_line(f"  {line}")
