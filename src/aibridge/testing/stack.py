"""A full test stack: the gateway on a real port, a fake upstream, an admin and a member.

Shared by the data-plane tests so each test reads as the scenario it checks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from aibridge.clock import Clock
from aibridge.fakellm import FakeLLM
from aibridge.server import Services
from aibridge.testing.gateway import announced_admin_token, gateway
from aibridge.testing.recorded import Recorded, interceptions, only_interception, user_id

PROVIDER_KEY = "sk-upstream-primary-0001"
"""The upstream key :meth:`Stack.add_provider` configures unless told otherwise."""
TIMEOUT = 60.0
"""Seconds any single wait in a stack test may take before it counts as hung."""


@dataclass
class Stack:
    """Handles to everything a data-plane test needs."""

    client: TestClient[web.Request, web.Application]
    services: Services
    fake: FakeLLM
    admin_token: str
    user_token: str

    @property
    def base(self) -> str:
        """The gateway's base URL (``http://127.0.0.1:PORT``)."""
        return str(self.client.make_url("")).rstrip("/")

    def admin_headers(self) -> dict[str, str]:
        """Admin API headers."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def add_provider(
        self,
        name: str,
        ptype: str,
        *,
        keys: Sequence[str] = (PROVIDER_KEY,),
        base_url: str | None = None,
        settings: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Create a provider through the admin API and wait until the data plane has it."""
        if base_url is None:
            base_url = self.fake.url if ptype == "anthropic" else self.fake.url + "/v1"
        body: dict[str, Any] = {
            "type": ptype,
            "name": name,
            "base_url": base_url,
            "api_keys": list(keys),
            "enabled": enabled,
        }
        if settings is not None:
            body["settings"] = settings
        async with asyncio.timeout(TIMEOUT):
            resp = await self.client.post(
                "/api/v1/providers", json=body, headers=self.admin_headers()
            )
            assert resp.status == 201, await resp.text()
            created: dict[str, Any] = await resp.json()
            await self.wait_for_provider(name, lambda p: p is not None and p.enabled == enabled)
        return created

    async def wait_for_provider(self, name: str, predicate: Any) -> None:
        """Wait (bounded) until the installed snapshot's ``name`` satisfies ``predicate``."""
        reloader = self.services.reloader
        assert reloader is not None
        async with asyncio.timeout(TIMEOUT):
            await reloader.wait_for(lambda snap: bool(predicate(snap.get(name))))

    async def flush_records(self) -> None:
        """Wait until the recorder has written everything queued so far."""
        recorder = self.services.recorder
        assert recorder is not None
        async with asyncio.timeout(TIMEOUT):
            await recorder.wait_idle()

    async def error_types(self) -> list[str | None]:
        """Flush the recorder; the ``error_type`` of every interception, oldest first."""
        await self.flush_records()
        return [row.error_type for row in await interceptions(self.services)]

    async def member_id(self) -> uuid.UUID:
        """The member's (``dev``) user id."""
        return await user_id(self.services, "dev")

    async def only_recording(self) -> Recorded:
        """Flush the recorder and return the member's single interception with its rows
        (AssertionError unless there is exactly one)."""
        await self.flush_records()
        async with asyncio.timeout(TIMEOUT):
            return await only_interception(self.services, await self.member_id())


@asynccontextmanager
async def stack(
    db_url: str,
    tmp_path: Path,
    *,
    settings_overrides: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    recorder_options: Mapping[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    **fake_kwargs: Any,
) -> AsyncIterator[Stack]:
    """Gateway + fake upstream + an admin token + a member's token.

    ``settings_overrides``, ``clock``, ``recorder_options`` and ``environ`` (the process
    environment start-up reads, e.g. ``OTEL_*``) go to :func:`gateway`; the other keyword
    arguments to :class:`FakeLLM`.
    """
    announced: list[str] = []
    async with (
        FakeLLM(**fake_kwargs).serve(host="127.0.0.1", port=0) as fake,
        gateway(
            db_url,
            tmp_path,
            announced=announced,
            settings_overrides=settings_overrides,
            clock=clock,
            recorder_options=recorder_options,
            environ=environ,
        ) as (client, services),
    ):
        admin_token = announced_admin_token(announced)
        async with asyncio.timeout(TIMEOUT):
            resp = await client.post(
                "/api/v1/users",
                json={"username": "dev", "role": "member"},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            assert resp.status == 201, await resp.text()
            resp = await client.post(
                "/api/v1/users/dev/keys",
                json={"name": "laptop"},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            assert resp.status == 201, await resp.text()
            user_token = (await resp.json())["token"]
        yield Stack(client, services, fake, admin_token, user_token)
