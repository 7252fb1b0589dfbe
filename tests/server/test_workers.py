"""``aibridge serve --workers 2`` on SQLite: both processes serve and converge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from aibridge.testing.replicas import start_replica

TIMEOUT = 30.0


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
