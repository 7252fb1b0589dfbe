"""Routing follows provider changes made through the admin API, end to end over real TLS
(reference §7.7). A host is "routed to X" when a fresh CONNECT is decrypted and its request
reaches the gateway as provider X; an unrouted host is tunnelled, and the proxy refuses the
tunnel because the fake upstream is on 127.0.0.1 (private ranges are not allow-listed).

The admin API cannot rename a provider: a rename is a delete and a create of the new name
on the same base URL, which is exactly what moves the host to another name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aibridge.proxy.routing import Router
from aibridge.testing.proxy import ProxyStack, basic, client_ctx, connect, tls_request
from aibridge.testing.stack import TIMEOUT


@pytest.fixture
def ps_db(db_url: str) -> str:
    """Both databases: on PostgreSQL the changes arrive by LISTEN/NOTIFY."""
    return db_url


def _mitm_counts(ps: ProxyStack) -> dict[str, float]:
    return {
        s.labels["provider"]: s.value
        for m in ps.proxy.metrics.mitm_requests.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }


def _info(ps: ProxyStack) -> set[tuple[str, str]]:
    return {
        (s.labels["provider_name"], s.labels["status"])
        for m in ps.proxy.metrics.provider_info.collect()
        for s in m.samples
    }


async def route_of(ps: ProxyStack, host: str) -> str | None:
    """Which provider a fresh CONNECT to ``host`` is routed to (None: tunnelled)."""
    before = _mitm_counts(ps)
    target = f"{host}:{ps.up.port}"
    async with connect(ps.proxy.port, target, auth=basic(ps.s.user_token)) as (resp, r, w):
        if resp.status != 200:
            assert resp.status == 403, resp
            assert resp.body == b"Forbidden"  # the tunnel's egress check, not a port refusal
            return None
        async with asyncio.timeout(TIMEOUT):
            await w.start_tls(client_ctx(ps.ca), server_hostname=host)
        await tls_request(r, w, "GET", "/v1/models", host=target)
    after = _mitm_counts(ps)
    grown = [name for name, n in after.items() if n > before.get(name, 0)]
    assert len(grown) == 1, (before, after)
    return grown[0]


async def _until(ps: ProxyStack, predicate: Callable[[Router], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        await ps.proxy.routing.wait_for(predicate)


def _owner(host: str, name: str | None) -> Callable[[Router], bool]:
    def check(router: Router) -> bool:
        found = router.lookup(host)
        return (found.name if found else None) == name

    return check


async def _admin(ps: ProxyStack, method: str, path: str, json: Any = None) -> None:
    async with asyncio.timeout(TIMEOUT):
        resp = await ps.s.client.request(
            method, "/api/v1/providers" + path, json=json, headers=ps.s.admin_headers()
        )
        assert resp.status in (200, 204), await resp.text()


async def test_routing_follows_create_rename_move_add_delete_and_recreate(
    ps: ProxyStack,
) -> None:
    url = ps.up.url() + "/v1"
    moved = ps.up.url("127.0.0.1") + "/v1"
    assert await route_of(ps, "localhost") is None

    await ps.s.add_provider("alpha", "openai", base_url=url)
    await _until(ps, _owner("localhost", "alpha"))
    assert await route_of(ps, "localhost") == "alpha"
    assert _info(ps) == {("alpha", "enabled")}

    # Rename: the same base URL now belongs to alpha-v2; alpha's series is gone.
    await _admin(ps, "DELETE", "/alpha")
    await ps.s.add_provider("alpha-v2", "openai", base_url=url)
    await _until(ps, _owner("localhost", "alpha-v2"))
    assert await route_of(ps, "localhost") == "alpha-v2"
    assert _info(ps) == {("alpha-v2", "enabled")}

    # Move the host: the new host is routed, the old one tunnelled.
    await _admin(ps, "PATCH", "/alpha-v2", {"base_url": moved})
    await _until(ps, _owner("localhost", None))
    assert await route_of(ps, "127.0.0.1") == "alpha-v2"
    assert await route_of(ps, "localhost") is None

    # A second provider routes independently; a third on its host is proxy_excluded.
    await ps.s.add_provider("beta", "openai", base_url=url)
    await ps.s.add_provider("gamma", "openai", base_url=url + "/other")
    await _until(ps, lambda r: _owner("localhost", "beta")(r) and len(r.statuses) == 3)
    assert await route_of(ps, "localhost") == "beta"
    assert await route_of(ps, "127.0.0.1") == "alpha-v2"
    assert _info(ps) == {
        ("alpha-v2", "enabled"),
        ("beta", "enabled"),
        ("gamma", "proxy_excluded"),
    }

    # Deleting alpha-v2 leaves the others; deleting everything routes nothing.
    await _admin(ps, "DELETE", "/alpha-v2")
    await _until(ps, _owner("127.0.0.1", None))
    assert await route_of(ps, "127.0.0.1") is None
    assert await route_of(ps, "localhost") == "beta"
    await _admin(ps, "DELETE", "/beta")
    # With beta gone, gamma is the first provider on the host and takes it.
    await _until(ps, _owner("localhost", "gamma"))
    assert await route_of(ps, "localhost") == "gamma"
    await _admin(ps, "DELETE", "/gamma")
    await _until(ps, lambda r: not r.statuses)
    assert await route_of(ps, "localhost") is None
    assert _info(ps) == set()

    await ps.s.add_provider("alpha", "openai", base_url=url)
    await _until(ps, _owner("localhost", "alpha"))
    assert await route_of(ps, "localhost") == "alpha"
    registry = ps.proxy.metrics.registry
    for series in (
        "aibridge_proxy_providers_last_reload_timestamp_seconds",
        "aibridge_proxy_providers_last_reload_success_timestamp_seconds",
    ):
        assert (registry.get_sample_value(series) or 0) > 0


async def _stale_tunnel(ps: ProxyStack, change: Callable[[], Any], new_owner: str | None) -> None:
    url = ps.up.url() + "/v1"
    await ps.s.add_provider("alpha", "openai", base_url=url)
    await _until(ps, _owner("localhost", "alpha"))
    target = f"localhost:{ps.up.port}"
    async with connect(ps.proxy.port, target, auth=basic(ps.s.user_token)) as (resp, r, w):
        assert resp.status == 200
        async with asyncio.timeout(TIMEOUT):
            await w.start_tls(client_ctx(ps.ca), server_hostname="localhost")
        first = await tls_request(r, w, "GET", "/v1/models", host=target)
        assert first.status == 200
        assert _mitm_counts(ps) == {"alpha": 1}
        upstream_before = len(ps.up.fake.requests)

        await change()
        await _until(ps, _owner("localhost", new_owner))

        second = await tls_request(r, w, "GET", "/v1/models", host=target)
        # Never sent to the gateway, under either name; the tunnel is closed.
        assert second.status == 421
        assert second.headers.get("connection") == "close"
        assert _mitm_counts(ps) == {"alpha": 1}
        assert len(ps.up.fake.requests) == upstream_before


async def test_a_stale_tunnel_stops_routing_after_the_provider_is_disabled(
    ps: ProxyStack,
) -> None:
    await _stale_tunnel(ps, lambda: _admin(ps, "PATCH", "/alpha", {"enabled": False}), None)


async def test_a_stale_tunnel_stops_routing_after_the_provider_is_renamed(
    ps: ProxyStack,
) -> None:
    async def rename() -> None:
        await _admin(ps, "DELETE", "/alpha")
        await ps.s.add_provider("alpha-v2", "openai", base_url=ps.up.url() + "/v1")

    await _stale_tunnel(ps, rename, "alpha-v2")
