"""``aibridge serve --workers 2`` on SQLite: both processes serve and converge."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp

from aibridge.testing.replicas import start_replica

TIMEOUT = 60.0


async def _readyz(url: str) -> dict[str, object]:
    # A fresh connection each time, so the kernel may pick either worker.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(f"{url}/readyz") as resp,
    ):
        assert resp.status == 200, await resp.text()
        data: dict[str, object] = await resp.json()
        return data


async def test_two_workers_share_the_port_and_converge(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gw = await start_replica("workers", None, data_dir, args=["--workers", "2"], listening=2)
    try:
        token = gw.admin_token()
        assert token, "first start must print the admin key"

        # Both workers answer on the one port, each its own replica (journal slot =
        # worker index), so a restarted worker never ends the other's interceptions.
        replicas: dict[object, object] = {}
        async with asyncio.timeout(TIMEOUT):
            while len(replicas) < 2:
                ready = await _readyz(gw.url)
                replicas[ready["pid"]] = ready["replica"]
        pids = set(replicas)
        replica_id = (data_dir / "replica-id").read_text().strip()
        assert sorted(map(str, replicas.values())) == [f"{replica_id}:0", f"{replica_id}:1"]

        # A change made through whichever worker answers reaches both.
        headers = {"Authorization": f"Bearer {token}"}
        body = {"type": "openai", "name": "shared", "base_url": "http://127.0.0.1:9/v1"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{gw.url}/api/v1/providers", json=body, headers=headers) as resp,
        ):
            assert resp.status == 201, await resp.text()
        converged: set[object] = set()
        async with asyncio.timeout(TIMEOUT):
            while converged != pids:
                data = await _readyz(gw.url)
                providers = data.get("providers")
                if isinstance(providers, dict) and "shared" in providers:
                    converged.add(data["pid"])
        code = await gw.terminate()
    finally:
        await gw.stop()
    assert code == 0, gw.tail()


# The supervisor with no grace at all: every worker exit looks like a crash after start-up,
# as a slow start-up on a loaded machine did. The database is prepared first, as
# ``aibridge serve`` does: two workers bootstrapping one empty database race each other.
_NO_GRACE_SUPERVISOR = """
import sys
from aibridge.cli.serve import prepare
from aibridge.config import Settings
from aibridge.eventloop import run
from aibridge.server import workers
workers.STARTUP_GRACE = 0.0
settings = Settings()
run(prepare(settings))
sys.exit(workers.run_workers(settings))
"""


async def test_a_worker_that_cannot_listen_stops_the_server_however_long_it_took(
    tmp_path: Path,
) -> None:
    """A worker whose start-up fails says so by its exit status, so the supervisor stops
    with 1 instead of restarting it forever when the start-up outlasted the grace."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")},
            "AIBRIDGE_DATA_DIR": str(tmp_path),
            "AIBRIDGE_LISTEN": f"127.0.0.1:{port}",
            "AIBRIDGE_WORKERS": "2",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _NO_GRACE_SUPERVISOR,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(45):
                _, stderr = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = stderr.decode(errors="replace")
    assert proc.returncode == 1, text
    assert f"cannot listen on 127.0.0.1:{port}" in text
    assert "restarting" not in text
