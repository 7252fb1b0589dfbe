"""Redis for tests: the shared test Redis (:data:`REDIS_ENV`) and private ``redis-server``
processes for destructive tests (``FLUSHALL``, stopping Redis mid-test).

Tests skip Redis when :data:`REDIS_ENV` is unset and fail instead when
:data:`REQUIRE_REDIS_ENV` is ``1`` (CI). Tests on the shared Redis use a unique key
prefix each, so parallel workers never collide, and never flush it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from aibridge.testing.replicas import free_port, poll

REDIS_ENV = "AIBRIDGE_TEST_REDIS_URL"
"""The shared test Redis, e.g. ``redis://127.0.0.1:6379/0``."""
REQUIRE_REDIS_ENV = "AIBRIDGE_TEST_REQUIRE_REDIS"
"""``1`` makes a missing :data:`REDIS_ENV` a failure instead of a skip."""
START_TIMEOUT = 10.0


def configured_redis_url() -> str | None:
    """The shared test Redis URL, or None when it is not configured."""
    return os.environ.get(REDIS_ENV) or None


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"aibridge-test:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete the keys under ``prefix`` (a test's own keys; never the others')."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@dataclass
class PrivateRedis:
    """A ``redis-server`` of the test's own on a free loopback port (no persistence)."""

    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    directory: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="aibridge-redis-"))

    @property
    def url(self) -> str:
        """The server's URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers."""
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = await asyncio.create_subprocess_exec(
            server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:

            async def answers() -> bool:
                try:
                    return bool(await client.ping())
                except (OSError, aioredis.RedisError):
                    return False

            await poll(answers, START_TIMEOUT, f"redis-server on port {self.port}")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it to exit."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), START_TIMEOUT)
        self.process = None


@asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    """A private ``redis-server`` for the block, killed and cleaned up after it."""
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
