"""``aibridge serve --workers 2`` on SQLite: both processes serve and converge."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _readyz(port: int) -> dict[str, object]:
    # A fresh connection each time, so the kernel may pick either worker.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as resp,
    ):
        assert resp.status == 200, await resp.text()
        data: dict[str, object] = await resp.json()
        return data


async def test_two_workers_share_the_port_and_converge(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ, AIBRIDGE_DATA_DIR=str(tmp_path / "data"), AIBRIDGE_LOG_LEVEL="info")
    env.pop("AIBRIDGE_DATABASE_URL", None)
    aibridge = str(Path(sys.executable).with_name("aibridge"))
    proc = await asyncio.create_subprocess_exec(
        aibridge,
        "serve",
        "--workers",
        "2",
        "--listen",
        f"127.0.0.1:{port}",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        listening = 0
        token = ""
        async with asyncio.timeout(TIMEOUT):
            while listening < 2:
                line = (await proc.stdout.readline()).decode()
                assert line, "server exited early:\n" + "".join(output)
                output.append(line)
                if line.strip().startswith("aib-"):
                    token = line.strip()
                if "aibridge listening" in line:
                    listening += 1
        assert token, "first start must print the admin key"

        # Both workers answer on the one port, each its own replica (journal slot =
        # worker index), so a restarted worker never ends the other's interceptions.
        replicas: dict[object, object] = {}
        async with asyncio.timeout(TIMEOUT):
            while len(replicas) < 2:
                ready = await _readyz(port)
                replicas[ready["pid"]] = ready["replica"]
        pids = set(replicas)
        replica_id = (tmp_path / "data" / "replica-id").read_text().strip()
        assert sorted(map(str, replicas.values())) == [f"{replica_id}:0", f"{replica_id}:1"]

        # A change made through whichever worker answers reaches both.
        headers = {"Authorization": f"Bearer {token}"}
        body = {"type": "openai", "name": "shared", "base_url": "http://127.0.0.1:9/v1"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/api/v1/providers", json=body, headers=headers
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
        converged: set[object] = set()
        async with asyncio.timeout(TIMEOUT):
            while converged != pids:
                data = await _readyz(port)
                providers = data.get("providers")
                if isinstance(providers, dict) and "shared" in providers:
                    converged.add(data["pid"])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, "".join(output)
