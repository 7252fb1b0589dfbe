"""``aibridge serve`` on an address that is taken: one clear error line and exit code 1,
from the single process and from a worker under ``--workers`` alike (the worker reports
it without the CLI: aibridge.server.runner raises, the caller prints)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from aibridge.testing.replicas import spawn_serve

TIMEOUT = 60.0


async def serve_on_taken_port(tmp_path: Path, *args: str) -> tuple[int, str, int]:
    """Run ``aibridge serve`` on a port another socket listens on; (exit code, stderr, port)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await spawn_serve(tmp_path, port, args=args)
        try:
            async with asyncio.timeout(TIMEOUT):
                _, stderr = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, stderr.decode(errors="replace"), port


@pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["single", "workers"])
async def test_serve_on_a_taken_address_says_so_and_exits_1(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    code, stderr, port = await serve_on_taken_port(tmp_path, *args)
    assert code == 1, stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: " in stderr
    assert "choose another --listen" in stderr
    assert "Traceback" not in stderr
