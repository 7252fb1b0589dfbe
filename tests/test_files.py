"""Files the gateway writes are 0600 in a 0700 data directory, whatever the umask, and a
data directory or database left readable by others is tightened."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from aibridge.cli import main
from aibridge.files import make_private, open_private, private_dir
from aibridge.recording.spill import SpillFile
from aibridge.testing.gateway import gateway
from aibridge.testing.stack import TIMEOUT


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block with the process umask set to ``mask``."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_files(db: Path) -> dict[str, int]:
    """Mode of the database and each sidecar that exists."""
    return {
        p.name: mode(p)
        for p in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal")))
        if p.exists()
    }


@pytest.mark.parametrize("mask", [0o000, 0o022])
async def test_a_new_data_dir_and_database_are_private(mask: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "aibridge.db"
    with umask(mask):
        async with gateway(f"sqlite:///{db}", data) as (client, _services):
            async with asyncio.timeout(TIMEOUT):
                assert (await client.get("/readyz")).status == 200
            assert mode(data) == 0o700
            files = sqlite_files(db)
            assert {"aibridge.db", "aibridge.db-wal", "aibridge.db-shm"} <= set(files)
            assert set(files.values()) == {0o600}, files


async def test_an_existing_loose_data_dir_and_database_are_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    db = data / "aibridge.db"
    async with gateway(f"sqlite:///{db}", data):
        pass  # creates the database
    os.chmod(data, 0o755)
    for name, _ in sqlite_files(db).items():
        os.chmod(data / name, 0o644)
    (data / "aibridge.db-journal").write_bytes(b"")
    os.chmod(data / "aibridge.db-journal", 0o666)
    with caplog.at_level(logging.WARNING, logger="aibridge.files"):
        async with gateway(f"sqlite:///{db}", data):
            assert mode(data) == 0o700
            assert set(sqlite_files(db).values()) == {0o600}
    assert any("tightened" in r.getMessage() for r in caplog.records)


def test_the_cli_creates_a_private_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "cli-data"
    with umask(0):
        result = CliRunner().invoke(
            main,
            ["users", "create", "ops", "--data-dir", str(data)],
            env={"AIBRIDGE_DATABASE_URL": "", "AIBRIDGE_ENCRYPTION_KEY": ""},
        )
    assert result.exit_code == 0, result.output
    assert mode(data) == 0o700
    assert set(sqlite_files(data / "aibridge.db").values()) == {0o600}


@pytest.mark.parametrize("kind", ["spill", "rejected"])
def test_spill_files_are_private(kind: str, tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "new-dir" / "recording-spill.jsonl", fsync=False)
    target = spill.path if kind == "spill" else spill.rejected_path
    write = spill.append if kind == "spill" else spill.reject
    with umask(0):
        write([b'{"n": 1}'])
    assert mode(target.parent) == 0o700
    assert mode(target) == 0o600
    # One left readable by others (an older version, a copied file) is tightened.
    os.chmod(target, 0o644)
    write([b'{"n": 2}'])
    assert mode(target) == 0o600
    assert target.read_bytes() == b'{"n": 1}\n{"n": 2}\n'


# --- the helpers themselves -----------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o277, 0o077])
def test_open_private_is_0600_whatever_the_umask(mask: int, tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with umask(mask):
        fd = open_private(path)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    assert mode(path) == 0o600
    with umask(mask):
        made = private_dir(tmp_path / "a" / "b")
    assert mode(made) == 0o700


def test_a_shared_sticky_directory_is_warned_about_not_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chmod(mine, 0o750)
    with caplog.at_level(logging.WARNING, logger="aibridge.files"):
        private_dir(shared)
        private_dir(mine, tighten=False)
    assert mode(shared) == 0o1777
    assert mode(mine) == 0o750
    assert [r.getMessage() for r in caplog.records] == [
        "directory holding gateway files is accessible by other users; run chmod 700 on it"
    ] * 2
    make_private(tmp_path / "missing")  # nothing to do, no error
