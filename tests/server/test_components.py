"""Start-up and shutdown of components on an exit stack (aibridge.server.components):
reverse order, a failed start is still stopped, and a stop that fails or hangs keeps no
other stop from running. The assembled gateway's shutdown is in test_shutdown.py."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from aibridge.server.components import Component, Components

TIMEOUT = 60.0


class Part:
    """A component that logs its start and stop in a shared journal."""

    def __init__(
        self,
        name: str,
        journal: list[str],
        *,
        fail_start: bool = False,
        fail_stop: bool = False,
        hang_stop: bool = False,
    ) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.fail_stop = fail_stop
        self.hang_stop = hang_stop

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")
        if self.hang_stop:
            await asyncio.Event().wait()

    def component(self, stop_timeout: float | None = 1.0) -> Component:
        return Component(self.name, start=self.start, stop=self.stop, stop_timeout=stop_timeout)


async def test_components_stop_in_reverse_order_of_their_start() -> None:
    journal: list[str] = []
    async with asyncio.timeout(TIMEOUT), AsyncExitStack() as stack:
        components = Components(stack)
        for name in ("database", "recorder", "pool"):
            await components.start(Part(name, journal).component())
        started = list(journal)
    assert started == ["start database", "start recorder", "start pool"]
    assert journal[3:] == ["stop pool", "stop recorder", "stop database"]


async def test_a_start_that_fails_still_stops_it_and_everything_before_it() -> None:
    journal: list[str] = []
    with pytest.raises(RuntimeError, match="reloader cannot start"):
        async with asyncio.timeout(TIMEOUT), AsyncExitStack() as stack:
            components = Components(stack)
            await components.start(Part("database", journal).component())
            await components.start(Part("reloader", journal, fail_start=True).component())
            await components.start(Part("never", journal).component())
    assert journal == ["start database", "start reloader", "stop reloader", "stop database"]


async def test_a_stop_that_fails_or_hangs_keeps_no_other_stop_from_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT):
        async with AsyncExitStack() as stack:
            components = Components(stack)
            await components.start(Part("recorder", journal).component())
            await components.start(Part("authenticator", journal, hang_stop=True).component(0.2))
            await components.start(Part("pubsub", journal, fail_stop=True).component())
            stopping = loop.time()
        took = loop.time() - stopping
    assert journal[3:] == ["stop pubsub", "stop authenticator", "stop recorder"]
    assert took < 2.0
    assert "closing the pubsub failed" in caplog.text
    assert "closing the authenticator failed" in caplog.text


async def test_a_component_without_a_start_only_registers_its_stop() -> None:
    journal: list[str] = []
    calls: list[str] = []

    def start_sync() -> None:
        calls.append("sync start")

    async with asyncio.timeout(TIMEOUT), AsyncExitStack() as stack:
        components = Components(stack)
        sessions, flusher = Part("sessions", journal), Part("flusher", journal)
        await components.start(Component("sessions", stop=sessions.stop))
        await components.start(Component("flusher", start=start_sync, stop=flusher.stop))
        assert journal == [] and calls == ["sync start"]
    assert journal == ["stop flusher", "stop sessions"]
