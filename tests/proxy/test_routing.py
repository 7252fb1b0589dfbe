"""The host → provider map: classification of rows and the reloader (reference §7.8-7.9)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from aibridge.proxy.metrics import ProxyMetrics
from aibridge.proxy.routing import (
    DISABLED,
    ENABLED,
    ERROR,
    PROXY_EXCLUDED,
    RoutedProvider,
    RoutingReloader,
    build_router,
)
from aibridge.store.providers import ProviderRoute
from aibridge.store.pubsub import PROVIDERS_CHANGED, InProcessPubSub

TIMEOUT = 60.0


def row(name: str, base_url: str, *, enabled: bool = True, ptype: str = "openai") -> ProviderRoute:
    return ProviderRoute(name, ptype, base_url, enabled)


class Rows:
    """A refresh function over a mutable list, failing on demand."""

    def __init__(self, *rows: ProviderRoute) -> None:
        self.rows = list(rows)
        self.fail = False

    async def __call__(self) -> Sequence[ProviderRoute]:
        if self.fail:
            raise OSError("database is down")
        return list(self.rows)


def info(metrics: ProxyMetrics) -> set[tuple[str, str, str]]:
    return {
        (s.labels["provider_name"], s.labels["provider_type"], s.labels["status"])
        for m in metrics.provider_info.collect()
        for s in m.samples
        if s.value == 1
    }


def sample(metrics: ProxyMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


def test_only_enabled_rows_with_a_usable_hostname_are_routed() -> None:
    router = build_router(
        [
            row("a", "https://api.a.example/v1"),
            row("off", "https://api.off.example", enabled=False),
            row("empty", ""),
            row("blank", "   "),
            row("malformed", "://not-a-url"),
            row("nohost", "https://"),
            row("ftp", "ftp://files.example"),
            row("badport", "https://api.b.example:99999"),
            row("b", "http://API.B.Example:8443/anthropic", ptype="anthropic"),
        ]
    )
    assert dict(router.hosts) == {
        "api.a.example": RoutedProvider("a", "openai"),
        "api.b.example": RoutedProvider("b", "anthropic"),
    }
    statuses = {s.name: (s.status, s.error) for s in router.statuses}
    assert statuses["off"] == (DISABLED, "")
    assert statuses["empty"] == (ERROR, "base url is empty")
    assert statuses["blank"][0] == ERROR
    assert statuses["malformed"][0] == ERROR
    assert statuses["nohost"] == (ERROR, 'base url "https://" has no hostname')
    assert statuses["ftp"][0] == ERROR
    assert statuses["badport"][0] == ERROR
    assert all(router.lookup(h) is None for h in ("api.off.example", "files.example", ""))


def test_lookups_are_case_insensitive() -> None:
    router = build_router([row("a", "https://API.Example.COM")])
    assert router.lookup("api.example.com") == router.lookup("API.EXAMPLE.COM") is not None
    assert router.lookup("api.example.com.") is not None


def test_the_first_provider_keeps_a_shared_host_the_others_are_proxy_excluded() -> None:
    router = build_router(
        [row("first", "https://shared.example/v1"), row("second", "https://SHARED.example/x")]
    )
    assert router.lookup("shared.example") == RoutedProvider("first", "openai")
    second = next(s for s in router.statuses if s.name == "second")
    assert second.status == PROXY_EXCLUDED
    assert second.error == 'hostname "shared.example" already claimed by provider "first"'


def test_all_rows_invalid_gives_an_empty_router() -> None:
    router = build_router([row("x", ""), row("y", "://bad"), row("z", "h", enabled=False)])
    assert dict(router.hosts) == {}


async def test_reload_swaps_the_router_and_the_provider_info_series() -> None:
    metrics = ProxyMetrics()
    rows = Rows(row("old", "https://old.example"), row("other", "https://other.example"))
    reloader = RoutingReloader(rows, None, metrics=metrics)
    assert await reloader.reload()
    assert reloader.router.lookup("old.example") == RoutedProvider("old", "openai")
    assert info(metrics) == {("old", "openai", ENABLED), ("other", "openai", ENABLED)}
    rows.rows = [row("new", "https://new.example")]
    assert await reloader.reload()
    assert reloader.router.lookup("old.example") is None
    assert dict(reloader.router.hosts) == {"new.example": RoutedProvider("new", "openai")}
    # The removed providers' series are gone (2 -> 1).
    assert info(metrics) == {("new", "openai", ENABLED)}


async def test_a_refresh_error_keeps_the_same_router_and_stamps_only_the_attempt() -> None:
    metrics = ProxyMetrics()
    rows = Rows(row("a", "https://a.example"))
    reloader = RoutingReloader(rows, None, metrics=metrics)
    rows.fail = True
    assert not await reloader.reload()
    assert reloader.last_error == "refresh ai providers for proxy routing: database is down"
    assert dict(reloader.router.hosts) == {}  # fail closed before the first load
    assert sample(metrics, "aibridge_proxy_providers_last_reload_timestamp_seconds") > 0
    assert sample(metrics, "aibridge_proxy_providers_last_reload_success_timestamp_seconds") == 0
    rows.fail = False
    assert await reloader.reload()
    kept = reloader.router
    success = sample(metrics, "aibridge_proxy_providers_last_reload_success_timestamp_seconds")
    assert success > 0
    rows.fail = True
    rows.rows = []
    assert not await reloader.reload()
    assert reloader.router is kept
    assert reloader.router.lookup("a.example") is not None
    assert (
        sample(metrics, "aibridge_proxy_providers_last_reload_success_timestamp_seconds") == success
    )
    rows.fail = False
    assert await reloader.reload()
    assert reloader.router.lookup("a.example") is None


async def test_start_subscribes_first_loads_once_and_reloads_on_notification() -> None:
    pubsub = InProcessPubSub()
    rows = Rows(row("a", "https://a.example"))
    reloader = RoutingReloader(rows, pubsub)
    await reloader.start()
    try:
        assert reloader.router.lookup("a.example") is not None
        rows.rows.append(row("b", "https://b.example"))
        await pubsub.publish(PROVIDERS_CHANGED, b"")
        async with asyncio.timeout(TIMEOUT):
            await reloader.wait_for(lambda r: r.lookup("b.example") is not None)
    finally:
        await reloader.stop()
        await pubsub.close()


async def test_a_failed_first_load_starts_with_an_empty_map_and_recovers() -> None:
    pubsub = InProcessPubSub()
    rows = Rows(row("a", "https://a.example"))
    rows.fail = True
    reloader = RoutingReloader(rows, pubsub)
    await reloader.start()
    try:
        assert dict(reloader.router.hosts) == {}
        rows.fail = False
        await pubsub.publish(PROVIDERS_CHANGED, b"")
        async with asyncio.timeout(TIMEOUT):
            await reloader.wait_for(lambda r: r.lookup("a.example") is not None)
    finally:
        await reloader.stop()
        await pubsub.close()


async def test_a_failed_subscription_fails_start() -> None:
    pubsub = InProcessPubSub()
    await pubsub.close()
    reloader = RoutingReloader(Rows(), pubsub)
    with pytest.raises(RuntimeError, match="closed"):
        await reloader.start()
    assert reloader._tasks == []


async def test_a_lost_notification_is_healed_by_the_config_version_poll() -> None:
    rows = Rows(row("a", "https://a.example"))
    version = 1

    async def read_version() -> int:
        return version

    # No pub/sub at all: only the poll can notice the change.
    reloader = RoutingReloader(rows, None, version=read_version, reconcile_interval=0.01)
    await reloader.start()
    try:
        rows.rows.append(row("b", "https://b.example"))
        version = 2
        async with asyncio.timeout(TIMEOUT):
            await reloader.wait_for(lambda r: r.lookup("b.example") is not None)
    finally:
        await reloader.stop()
