"""ProviderReloader against a real database (SQLite file and PostgreSQL).

Python counterparts of the reference's reload tests (§7.5, newer revision), the reload
metrics tests (§7.6 / §7.9) and the snapshot-reuse rule of DESIGN.md "Hot reload".
Rows are written with the store functions directly (committed, config version bumped,
but no admin-API validation), and notifications go through an in-process pub/sub or a
scripted double that can fail on cue. Database failures are real: the providers table
is renamed away, so the reload's read fails on the server. Every wait is on the
reloader's snapshot condition or on reload results, inside ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aibridge.providers.base import DisabledProvider, Provider
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.reload import ProviderReloader, ReloadMetrics
from aibridge.store import mcp_servers as mcp_store
from aibridge.store import providers as store
from aibridge.store.db import session_factory
from aibridge.store.mcp_servers import MCPAuth, MCPServerRecord, MCPServerSpec
from aibridge.store.providers import KeyMutation, ProviderPatch, ProviderRecord, ProviderSpec
from aibridge.store.pubsub import (
    MCP_SERVERS_CHANGED,
    PROVIDERS_CHANGED,
    Callback,
    InProcessPubSub,
    MessagesMayBeLost,
    Unsubscribe,
)

WAIT = 10.0
NEVER = 3600.0  # reconcile interval that cannot fire during a test
URL_A = "http://127.0.0.1:9/a/v1"
URL_B = "http://127.0.0.1:9/b/v1"


# --------------------------------------------------------------------------- doubles


class ScriptedPubSub(InProcessPubSub):
    """In-process pub/sub that can fail ``subscribe``, run a hook once the subscription is
    live, and deliver to subscribers synchronously (optionally with an error)."""

    def __init__(
        self,
        *,
        subscribe_error: Exception | None = None,
        after_subscribe: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.subscribe_error = subscribe_error
        self.after_subscribe = after_subscribe
        # The reloader subscribes to several channels; the hook runs after this one's.
        self.after_subscribe_to = PROVIDERS_CHANGED
        self.subscribe_calls = 0

    async def subscribe(self, channel: str, callback: Callback) -> Unsubscribe:
        """Fail on cue, else subscribe and then run ``after_subscribe``."""
        self.subscribe_calls += 1
        if self.subscribe_error is not None:
            raise self.subscribe_error
        unsubscribe = await super().subscribe(channel, callback)
        if self.after_subscribe is not None and channel == self.after_subscribe_to:
            await self.after_subscribe()
        return unsubscribe

    def subscribers(self, channel: str = PROVIDERS_CHANGED) -> int:
        """How many callbacks are registered on ``channel``."""
        return len(self._subs.get(channel, []))

    async def deliver(
        self, error: Exception | None = None, channel: str = PROVIDERS_CHANGED
    ) -> None:
        """Hand one delivery to every subscriber now (as the PostgreSQL backend does
        after a reconnect, with ``MessagesMayBeLost``)."""
        for callback in list(self._subs.get(channel, [])):
            result = callback(b"", error)
            if asyncio.iscoroutine(result):
                await result


class ObservedReloader(ProviderReloader):
    """The real reloader, plus a record of every ``reload()`` result and a gate that can
    hold reloads (used to make coalescing deterministic)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[bool] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self._done = asyncio.Condition()

    async def reload(self) -> bool:
        """Wait for the gate, reload, record the outcome."""
        self.entered.set()
        await self.gate.wait()
        ok = await super().reload()
        self.results.append(ok)
        async with self._done:
            self._done.notify_all()
        return ok

    async def wait_results(self, count: int) -> list[bool]:
        """Wait (bounded) until at least ``count`` reloads have finished."""
        async with asyncio.timeout(WAIT), self._done:
            await self._done.wait_for(lambda: len(self.results) >= count)
        return list(self.results)


@dataclass
class Harness:
    """A reloader over a real database, recording every snapshot it installs."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pubsub: ScriptedPubSub
    metrics: ReloadMetrics
    installed: list[ProviderSnapshot] = field(default_factory=list)
    reloader: ObservedReloader | None = None

    def make(self, *, interval: float = NEVER) -> ObservedReloader:
        """Create the reloader (not started)."""
        self.reloader = ObservedReloader(
            self.sessions,
            None,
            self.pubsub,
            self.installed.append,
            reconcile_interval=interval,
            metrics=self.metrics,
        )
        return self.reloader

    async def start(self, *, interval: float = NEVER) -> ObservedReloader:
        """Create and start the reloader (bounded)."""
        reloader = self.make(interval=interval)
        async with asyncio.timeout(WAIT):
            await reloader.start()
        return reloader

    async def until(self, predicate: Callable[[ProviderSnapshot], bool]) -> ProviderSnapshot:
        """Wait (bounded) until an installed snapshot satisfies ``predicate``."""
        assert self.reloader is not None
        async with asyncio.timeout(WAIT):
            return await self.reloader.wait_for(predicate)

    async def publish(self) -> None:
        """Announce a provider change the way the admin API does."""
        await self.pubsub.publish(PROVIDERS_CHANGED)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of one exported series."""
        return self.metrics.registry.get_sample_value(name, labels or {})

    def provider_info(self) -> set[tuple[str, str, str]]:
        """Every ``aibridge_provider_info`` series as (name, type, status)."""
        found: set[tuple[str, str, str]] = set()
        for family in self.metrics.provider_info.collect():
            for s in family.samples:
                assert s.value == 1.0
                found.add(
                    (s.labels["provider_name"], s.labels["provider_type"], s.labels["status"])
                )
        return found


@pytest.fixture
async def h(engine: AsyncEngine) -> AsyncIterator[Harness]:
    """A harness on each backend; stops the reloader and pub/sub afterwards."""
    harness = Harness(
        engine, session_factory(engine), ScriptedPubSub(), ReloadMetrics(CollectorRegistry())
    )
    try:
        yield harness
    finally:
        if harness.reloader is not None:
            async with asyncio.timeout(WAIT):
                await harness.reloader.stop()
        await harness.pubsub.close()


# --------------------------------------------------------------------- DB helpers


async def add_row(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    *,
    ptype: str = "openai",
    base_url: str = URL_A,
    enabled: bool = True,
    settings: dict[str, Any] | None = None,
    keys: tuple[str, ...] = ("sk-reload-test-0001",),
) -> ProviderRecord:
    """Insert and commit a provider row (store layer: no API validation)."""
    spec = ProviderSpec(
        type=ptype,
        name=name,
        base_url=base_url,
        enabled=enabled,
        api_keys=keys,
        settings=settings,
    )
    async with asyncio.timeout(WAIT), sessions() as s, s.begin():
        return await store.create_provider(s, None, spec)


async def patch_row(
    sessions: async_sessionmaker[AsyncSession], record: ProviderRecord, patch: ProviderPatch
) -> ProviderRecord:
    """Apply and commit ``patch``."""
    async with asyncio.timeout(WAIT), sessions() as s, s.begin():
        change = await store.update_provider(s, None, record.id, patch)
    return change.after


async def delete_row(sessions: async_sessionmaker[AsyncSession], record: ProviderRecord) -> None:
    """Soft-delete and commit."""
    async with asyncio.timeout(WAIT), sessions() as s, s.begin():
        assert await store.delete_provider(s, record.id)


async def rename_table(engine: AsyncEngine, old: str, new: str) -> None:
    """Make provider reads fail for real (and heal them again) on either backend."""
    async with asyncio.timeout(WAIT), engine.begin() as conn:
        await conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


def base_url_of(snapshot: ProviderSnapshot, name: str) -> str | None:
    """The base URL behind ``name`` in ``snapshot`` (None when absent)."""
    runtime = snapshot.get(name)
    return runtime.record.base_url if runtime is not None else None


# -------------------------------------------------------------------- start-up order


async def test_subscribes_before_initial_load_so_a_change_in_between_is_not_lost(
    h: Harness,
) -> None:
    # The change lands after the subscription is live but before the initial read; its
    # notification is sent too. Subscribing first means the initial read already has it.
    installed_at_subscribe: list[int] = []

    async def change_after_subscribe() -> None:
        installed_at_subscribe.append(len(h.installed))
        await add_row(h.sessions, "late")
        await h.publish()

    h.pubsub.after_subscribe = change_after_subscribe
    await add_row(h.sessions, "early")
    await h.start()

    assert installed_at_subscribe == [0], "reloaded before subscribing"
    # No await since start() returned: this is what the initial reload installed.
    assert len(h.installed) == 1
    assert set(h.installed[0].providers) == {"early", "late"}
    assert h.pubsub.subscribers() == 1


async def test_subscription_failure_fails_start_and_loads_nothing(h: Harness) -> None:
    await add_row(h.sessions, "alpha")
    h.pubsub.subscribe_error = ConnectionError("LISTEN failed")
    reloader = h.make()
    with pytest.raises(ConnectionError, match="LISTEN failed"):
        async with asyncio.timeout(WAIT):
            await reloader.start()
    assert h.pubsub.subscribe_calls == 1
    assert reloader.results == [], "a reload ran although the subscription failed"
    assert h.installed == []
    assert reloader.status.last_attempt is None and not reloader.status.loaded


async def test_initial_load_failure_fails_start_and_unsubscribes(h: Harness) -> None:
    await add_row(h.sessions, "alpha")
    await rename_table(h.engine, "ai_providers", "ai_providers_hidden")
    try:
        reloader = h.make()
        with pytest.raises(RuntimeError, match="initial provider load failed"):
            async with asyncio.timeout(WAIT):
                await reloader.start()
        assert reloader.results == [False]
        assert h.installed == []
        assert not reloader.status.loaded
        assert reloader.status.last_error is not None
        assert "ai_providers" in reloader.status.last_error
        # A start that failed must not leave a live subscription behind.
        assert h.pubsub.subscribers() == 0
        assert h.sample("aibridge_provider_reloads_total", {"result": "error"}) == 1.0
        assert h.sample("aibridge_provider_reload_last_success_timestamp_seconds") == 0.0
    finally:
        await rename_table(h.engine, "ai_providers_hidden", "ai_providers")


# ------------------------------------------------------------------- notifications


async def test_notification_triggers_reload(h: Harness) -> None:
    reloader = await h.start()
    assert reloader.results == [True]
    assert dict(h.installed[-1].providers) == {}

    await add_row(h.sessions, "alpha")
    await h.publish()
    snapshot = await h.until(lambda s: s.get("alpha") is not None)

    assert isinstance(snapshot.get("alpha"), Provider)
    assert snapshot.generation > h.installed[0].generation
    assert reloader.results[:2] == [True, True]
    assert reloader.status.config_version >= 1


async def test_delivery_with_error_also_triggers_reload(h: Harness) -> None:
    # Committed without any notification: only the "messages may be lost" delivery can
    # bring it in (the reconcile poll is effectively off).
    reloader = await h.start()
    await add_row(h.sessions, "alpha")
    await h.pubsub.deliver(MessagesMayBeLost("listener reconnected"))
    await h.until(lambda s: s.get("alpha") is not None)
    assert await reloader.wait_results(2) == [True, True]

    # A clean delivery after that reloads too.
    await add_row(h.sessions, "beta")
    await h.pubsub.deliver(None)
    await h.until(lambda s: s.get("beta") is not None)
    assert await reloader.wait_results(3) == [True, True, True]


async def test_burst_of_notifications_coalesces(h: Harness) -> None:
    reloader = await h.start()
    alpha = await add_row(h.sessions, "alpha")

    # Hold the reload the first notification starts, then pile 50 more onto it.
    reloader.gate.clear()
    reloader.entered.clear()
    await h.pubsub.deliver()
    async with asyncio.timeout(WAIT):
        await reloader.entered.wait()
    await patch_row(h.sessions, alpha, ProviderPatch(base_url=URL_B))
    for _ in range(50):
        await h.pubsub.deliver()
    reloader.gate.set()

    # The held reload plus exactly one more for everything that arrived meanwhile.
    assert await reloader.wait_results(3) == [True, True, True]
    snapshot = await h.until(lambda s: base_url_of(s, "alpha") == URL_B)
    assert snapshot is h.installed[-1]

    # A later change is picked up by the very next reload: nothing else was queued.
    await add_row(h.sessions, "barrier")
    await h.publish()
    await h.until(lambda s: s.get("barrier") is not None)
    assert len(reloader.results) == 4, reloader.results
    assert len(h.installed) == 4


# ------------------------------------------------------------------------ failures


async def test_failed_read_keeps_previous_snapshot_and_reports_error(h: Harness) -> None:
    await add_row(h.sessions, "alpha")
    reloader = await h.start()
    before = h.installed[-1]
    attempt_before = h.sample("aibridge_provider_reload_last_attempt_timestamp_seconds")
    success_before = h.sample("aibridge_provider_reload_last_success_timestamp_seconds")
    assert attempt_before is not None and success_before is not None

    await rename_table(h.engine, "ai_providers", "ai_providers_hidden")
    try:
        await h.publish()
        assert await reloader.wait_results(2) == [True, False]
        assert h.installed == [before], "a failed read replaced the snapshot"
        assert reloader.status.loaded
        assert reloader.status.last_error is not None
        assert "ai_providers" in reloader.status.last_error
        assert reloader.status.provider_status == {"alpha": ("openai", "enabled")}
        assert h.sample("aibridge_provider_reloads_total", {"result": "error"}) == 1.0
        attempt = h.sample("aibridge_provider_reload_last_attempt_timestamp_seconds")
        assert attempt is not None and attempt >= attempt_before
        assert reloader.status.last_attempt == attempt
        assert h.sample("aibridge_provider_reload_last_success_timestamp_seconds") == success_before
        assert h.provider_info() == {("alpha", "openai", "enabled")}

        # The subscription survives a failed reload: the next event is handled (and fails).
        await h.publish()
        assert await reloader.wait_results(3) == [True, False, False]
        assert h.sample("aibridge_provider_reloads_total", {"result": "error"}) == 2.0
    finally:
        await rename_table(h.engine, "ai_providers_hidden", "ai_providers")

    await add_row(h.sessions, "beta")
    await h.publish()
    snapshot = await h.until(lambda s: s.get("beta") is not None)
    assert set(snapshot.providers) == {"alpha", "beta"}
    assert reloader.status.last_error is None
    success = h.sample("aibridge_provider_reload_last_success_timestamp_seconds")
    assert success is not None and success >= success_before


async def test_misconfigured_rows_are_skipped_and_reported_others_load(h: Harness) -> None:
    await add_row(h.sessions, "good")
    await add_row(h.sessions, "bad-url", base_url="://not-a-url")
    await add_row(h.sessions, "bad-scheme", base_url="ftp://files.example.com/")
    await add_row(h.sessions, "bad-settings", settings={"upstream_timeout_seconds": "soon"})
    await add_row(h.sessions, "bad-breaker", settings={"circuit_breaker": "on"})
    await add_row(h.sessions, "bad-keys", keys=("sk-same-0001", "sk-same-0001"))
    # Disabled rows are not built at all: bad settings there do not matter.
    await add_row(
        h.sessions, "off", ptype="anthropic", enabled=False, settings={"circuit_breaker": "on"}
    )
    reloader = await h.start()

    snapshot = h.installed[-1]
    assert set(snapshot.providers) == {"good", "off"}
    assert isinstance(snapshot.get("good"), Provider)
    off = snapshot.get("off")
    assert isinstance(off, DisabledProvider) and not off.enabled
    bad = {"bad-url", "bad-scheme", "bad-settings", "bad-breaker", "bad-keys"}
    assert set(snapshot.errors) == bad
    assert "base_url" in snapshot.errors["bad-url"]
    assert "upstream_timeout_seconds must be a number" in snapshot.errors["bad-settings"]
    assert reloader.status.last_error is None, "one bad row failed the whole reload"
    assert reloader.status.provider_status == {
        "good": ("openai", "enabled"),
        "off": ("anthropic", "disabled"),
    } | {name: ("openai", "error") for name in bad}
    assert h.provider_info() == {
        ("good", "openai", "enabled"),
        ("off", "anthropic", "disabled"),
    } | {(name, "openai", "error") for name in bad}

    # Fixing a row brings it in on the next reload.
    async with h.sessions() as s:
        fixed = await store.get_provider_by_name(s, None, "bad-url")
    assert fixed is not None
    await patch_row(h.sessions, fixed, ProviderPatch(base_url=URL_B))
    await h.publish()
    snapshot = await h.until(lambda s: s.get("bad-url") is not None)
    assert "bad-url" not in snapshot.errors
    assert reloader.status.provider_status["bad-url"] == ("openai", "enabled")


async def test_disabled_rows_become_stubs_and_come_back(h: Harness) -> None:
    alpha = await add_row(h.sessions, "alpha")
    reloader = await h.start()
    await patch_row(h.sessions, alpha, ProviderPatch(enabled=False))
    await h.publish()
    snapshot = await h.until(lambda s: isinstance(s.get("alpha"), DisabledProvider))
    stub = snapshot.get("alpha")
    assert isinstance(stub, DisabledProvider)
    assert stub.family == "openai"  # the 503 is rendered in the provider's error shape
    assert reloader.status.provider_status == {"alpha": ("openai", "disabled")}
    assert h.provider_info() == {("alpha", "openai", "disabled")}

    await patch_row(h.sessions, alpha, ProviderPatch(enabled=True))
    await h.publish()
    snapshot = await h.until(lambda s: isinstance(s.get("alpha"), Provider))
    assert h.provider_info() == {("alpha", "openai", "enabled")}


# ----------------------------------------------------------------------- reconcile


async def test_reconcile_loop_heals_a_missed_notification(h: Harness) -> None:
    reloader = await h.start(interval=0.01)
    await add_row(h.sessions, "alpha")  # committed, never announced
    snapshot = await h.until(lambda s: s.get("alpha") is not None)
    assert reloader.status.config_version >= 1
    assert snapshot.get("alpha") is not None

    # Also after a failed reload: the poll notices the version is still behind.
    await rename_table(h.engine, "ai_providers", "ai_providers_hidden")
    try:
        await h.pubsub.deliver()
        count = len(reloader.results)
        results = await reloader.wait_results(count + 1)
        assert results[-1] is False
    finally:
        await rename_table(h.engine, "ai_providers_hidden", "ai_providers")
    await add_row(h.sessions, "beta")  # again without a notification
    await h.until(lambda s: s.get("beta") is not None)
    assert reloader.status.last_error is None


async def test_without_notification_or_poll_nothing_changes(h: Harness) -> None:
    # The control for the reconcile test: with the poll off, an unannounced change stays
    # invisible until a notification arrives.
    reloader = await h.start()
    await add_row(h.sessions, "alpha")
    await add_row(h.sessions, "barrier")
    assert reloader.results == [True]
    await h.publish()
    snapshot = await h.until(lambda s: s.get("barrier") is not None)
    assert reloader.results == [True, True]
    assert snapshot.get("alpha") is not None


# ------------------------------------------------------------------ runtime reuse


async def test_unchanged_rows_keep_their_runtime_changed_rows_get_new_ones(h: Harness) -> None:
    alpha = await add_row(h.sessions, "alpha", keys=("sk-alpha-0001", "sk-alpha-0002"))
    beta = await add_row(h.sessions, "beta")
    await h.start()
    first = h.installed[-1]
    alpha_rt = first.get("alpha")
    beta_rt = first.get("beta")
    assert isinstance(alpha_rt, Provider) and isinstance(beta_rt, Provider)
    primary = alpha_rt.keys.acquire()
    assert alpha_rt.keys.mark_failed(primary, 429, retry_after=300)

    await patch_row(h.sessions, beta, ProviderPatch(base_url=URL_B))
    await h.publish()
    second = await h.until(lambda s: base_url_of(s, "beta") == URL_B)
    assert second.generation > first.generation
    assert second.get("alpha") is alpha_rt, "an unchanged row got a new runtime"
    assert not alpha_rt.keys.is_usable(primary), "key cooldown lost across a reload"
    assert alpha_rt.keys.acquire().secret == "sk-alpha-0002"
    assert second.get("beta") is not beta_rt

    # Rotating alpha's keys is a change: a new runtime with fresh key state.
    await patch_row(
        h.sessions,
        alpha,
        ProviderPatch(api_keys=[KeyMutation(api_key="sk-alpha-0003")]),
    )
    await h.publish()
    third = await h.until(lambda s: s.get("alpha") is not alpha_rt)
    rotated = third.get("alpha")
    assert isinstance(rotated, Provider)
    assert [k.secret for k in rotated.keys.keys] == ["sk-alpha-0003"]
    assert rotated.keys.acquire().secret == "sk-alpha-0003"
    assert third.get("beta") is second.get("beta")


# ------------------------------------------------------------------------- metrics


async def test_reloads_report_provider_info_and_timestamps_in_metrics(h: Harness) -> None:
    await add_row(h.sessions, "alpha")
    await add_row(h.sessions, "beta", ptype="anthropic", enabled=False)
    gamma = await add_row(h.sessions, "gamma", base_url="not a url")
    started = time.time()
    reloader = await h.start()
    finished = time.time()

    assert h.provider_info() == {
        ("alpha", "openai", "enabled"),
        ("beta", "anthropic", "disabled"),
        ("gamma", "openai", "error"),
    }
    attempt = h.sample("aibridge_provider_reload_last_attempt_timestamp_seconds")
    success = h.sample("aibridge_provider_reload_last_success_timestamp_seconds")
    assert attempt is not None and started <= attempt <= finished
    assert success is not None and attempt <= success <= finished
    assert h.sample("aibridge_provider_reloads_total", {"result": "success"}) == 1.0
    assert reloader.status.last_attempt == attempt
    assert reloader.status.last_success == success

    # A provider absent from the next reload disappears from provider_info.
    await delete_row(h.sessions, gamma)
    await h.publish()
    await h.until(lambda s: "gamma" not in s.errors)
    assert h.provider_info() == {
        ("alpha", "openai", "enabled"),
        ("beta", "anthropic", "disabled"),
    }
    later = h.sample("aibridge_provider_reload_last_success_timestamp_seconds")
    assert later is not None and later >= success
    assert h.sample("aibridge_provider_reloads_total", {"result": "success"}) == 2.0
    assert "gamma" not in reloader.status.provider_status


# ---------------------------------------------------------------------- MCP servers


async def add_mcp_row(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    *,
    enabled: bool = True,
    allow: str | None = None,
    auth: MCPAuth | None = None,
) -> MCPServerRecord:
    """Insert and commit an MCP server row (store layer: no API validation)."""
    spec = MCPServerSpec(
        name=name,
        url=f"http://127.0.0.1:9/{name}/mcp",
        enabled=enabled,
        tool_allow=allow,
        auth=auth or MCPAuth(),
    )
    async with asyncio.timeout(WAIT), sessions() as s, s.begin():
        return await mcp_store.create_server(s, None, spec)


def mcp_names(snapshot: ProviderSnapshot) -> list[str]:
    return [s.name for s in snapshot.mcp_servers]


async def test_mcp_server_changes_are_reloaded_on_their_own_channel(h: Harness) -> None:
    await add_row(h.sessions, "alpha")
    await add_mcp_row(h.sessions, "off", enabled=False)
    reloader = await h.start()
    assert mcp_names(h.installed[-1]) == []
    assert h.pubsub.subscribers(MCP_SERVERS_CHANGED) == 1

    header = MCPAuth("header", "X-Api-Key", "hdr-value-0001")
    created = await add_mcp_row(h.sessions, "tools", allow="^read_", auth=header)
    await h.pubsub.publish(MCP_SERVERS_CHANGED)
    snapshot = await h.until(lambda s: mcp_names(s) == ["tools"])
    (server,) = snapshot.mcp_servers
    assert (server.id, server.url) == (created.id, "http://127.0.0.1:9/tools/mcp")
    assert server.tool_allow is not None and server.tool_allow.search("read_file")
    assert server.tool_deny is None
    assert (server.auth, server.header_name, server.header_value) == (
        "header",
        "X-Api-Key",
        "hdr-value-0001",
    )
    assert isinstance(snapshot.get("alpha"), Provider), "providers must survive an MCP reload"
    assert reloader.status.mcp_servers == 1 and reloader.status.mcp_errors == {}

    async with asyncio.timeout(WAIT), h.sessions() as s, s.begin():
        assert await mcp_store.delete_server(s, created.id)
    await h.pubsub.publish(MCP_SERVERS_CHANGED)
    await h.until(lambda s: mcp_names(s) == [])
    await reloader.stop()
    assert h.pubsub.subscribers(MCP_SERVERS_CHANGED) == 0
    assert h.pubsub.subscribers(PROVIDERS_CHANGED) == 0


async def test_a_mcp_row_written_around_validation_is_skipped_and_reported(h: Harness) -> None:
    await add_mcp_row(h.sessions, "good")
    await add_mcp_row(h.sessions, "bad-regex", allow="(")
    reloader = await h.start()
    assert mcp_names(h.installed[-1]) == ["good"]
    assert set(reloader.status.mcp_errors) == {"bad-regex"}
    assert reloader.status.last_error is None, "one bad row failed the whole reload"


async def test_reconcile_loop_heals_a_missed_mcp_notification(h: Harness) -> None:
    await h.start(interval=0.01)
    await add_mcp_row(h.sessions, "tools")  # committed, never announced
    await h.until(lambda s: mcp_names(s) == ["tools"])
