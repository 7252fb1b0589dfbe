"""Routing in one call: ``ProviderSnapshot.resolve(name, raw_path, method)``.

Every edge resolves to its route type or its error (status, message, error shape), in a
fixed order of checks, against the snapshot it is called on and nothing else.
"""

from __future__ import annotations

import pytest

from aibridge.providers.base import build_provider
from aibridge.providers.routes import (
    NOT_FOUND,
    BridgedRoute,
    PassthroughRoute,
    RoutingError,
    WebSocketRoute,
)
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.store.providers import ProviderRecord
from aibridge.testing.providers import provider_record


def record(name: str, ptype: str, *, enabled: bool = True) -> ProviderRecord:
    base = "https://api.example.com" + ("" if ptype == "anthropic" else "/v1")
    return provider_record(name, ptype, base, enabled=enabled)


SNAPSHOT = ProviderSnapshot(
    7,
    {
        r.name: build_provider(r)
        for r in (
            record("ant", "anthropic"),
            record("oai", "openai"),
            record("off", "openai", enabled=False),
        )
    },
)


@pytest.mark.parametrize(
    ("name", "path", "api", "suffix"),
    [
        ("ant", "/v1/messages", "messages", "/v1/messages"),
        ("oai", "/v1/chat/completions", "chat", "/chat/completions"),
        ("oai", "/v1/responses", "responses", "/responses"),
        # Matched on the decoded path, forwarded as sent.
        ("ant", "/v1/%6Dessages", "messages", "/v1/%6Dessages"),
    ],
)
def test_bridged_routes_name_their_provider_and_api(
    name: str, path: str, api: str, suffix: str
) -> None:
    route = SNAPSHOT.resolve(name, path, "POST")
    assert isinstance(route, BridgedRoute)
    assert route.provider is SNAPSHOT.get(name)
    assert (route.api, route.upstream_suffix) == (api, suffix)
    assert route.label == path.replace("%6D", "m")


@pytest.mark.parametrize(
    ("name", "path", "suffix"),
    [
        ("ant", "/v1/models", "/v1/models"),
        ("ant", "/v1/messages/count_tokens", "/v1/messages/count_tokens"),
        ("oai", "/v1/models/gpt-4o", "/models/gpt-4o"),
        ("oai", "/v1/responses/resp_1", "/responses/resp_1"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_passthrough_routes_take_any_method(name: str, path: str, suffix: str, method: str) -> None:
    route = SNAPSHOT.resolve(name, path, method)
    assert isinstance(route, PassthroughRoute)
    assert route.provider is SNAPSHOT.get(name)
    assert route.upstream_suffix == suffix


def test_every_edge_is_an_error_with_its_status_message_and_shape() -> None:
    assert SNAPSHOT.resolve("nope", "/v1/messages", "POST") is NOT_FOUND
    assert SNAPSHOT.resolve("ant", "/v1/nothing-here", "POST") is NOT_FOUND
    assert SNAPSHOT.resolve("oai", "/chat/completions", "POST") is NOT_FOUND  # no /v1
    assert RoutingError(404, "route not supported", None) == NOT_FOUND
    assert SNAPSHOT.resolve("off", "/v1/chat/completions", "POST") == RoutingError(
        503, 'provider_disabled: AI provider "off" is disabled', "openai"
    )
    assert SNAPSHOT.resolve("ant", "/v1/messages", "GET", websocket=True) == RoutingError(
        501, "WebSocket transport is not supported, use HTTP", "anthropic"
    )
    assert SNAPSHOT.resolve("oai", "/v1/models/%2e%2e/x", "GET") == RoutingError(
        400,
        'invalid request path: "." and ".." segments (also percent-encoded) are not '
        "allowed; send the resolved path",
        "openai",
    )
    assert SNAPSHOT.resolve("ant", "/v1/messages", "GET") == RoutingError(
        405, "GET is not allowed on /ant/v1/messages; use POST", "anthropic"
    )


def test_checks_run_in_a_fixed_order() -> None:
    # Unknown provider before anything about the request.
    assert SNAPSHOT.resolve("nope", "/%2e%2e", "GET", websocket=True) is NOT_FOUND
    # Disabled before the WebSocket and path checks.
    error = SNAPSHOT.resolve("off", "/%2e%2e", "GET", websocket=True)
    assert isinstance(error, RoutingError) and error.status == 503
    # WebSocket before the path check.
    error = SNAPSHOT.resolve("oai", "/v1/%2e%2e", "GET", websocket=True)
    assert isinstance(error, RoutingError) and error.status == 501
    # An unsafe path before "no such route" and the method.
    error = SNAPSHOT.resolve("ant", "/v1/messages/%2e%2e", "GET")
    assert isinstance(error, RoutingError) and error.status == 400


def test_resolution_uses_only_the_snapshot_it_is_called_on() -> None:
    later = ProviderSnapshot(8, {"ant": build_provider(record("ant", "anthropic"))})
    old_route = SNAPSHOT.resolve("ant", "/v1/messages", "POST")
    new_route = later.resolve("ant", "/v1/messages", "POST")
    assert isinstance(old_route, BridgedRoute) and isinstance(new_route, BridgedRoute)
    assert old_route.provider is SNAPSHOT.get("ant")
    assert new_route.provider is later.get("ant")
    assert old_route.provider is not new_route.provider
    assert later.resolve("oai", "/v1/chat/completions", "POST") is NOT_FOUND


def test_websocket_upgrades_are_served_only_on_the_responses_route_of_openai_types() -> None:
    copilot = build_provider(provider_record("cop", "copilot", "https://api.githubcopilot.com"))
    snap = ProviderSnapshot(9, {"oai": SNAPSHOT.providers["oai"], "cop": copilot})
    route = snap.resolve("oai", "/v1/responses", "GET", websocket=True)
    assert route == WebSocketRoute(SNAPSHOT.providers["oai"], "/responses", "/v1/responses")
    unsupported = RoutingError(501, "WebSocket transport is not supported, use HTTP", "openai")
    assert snap.resolve("oai", "/v1/responses", "POST", websocket=True) == unsupported
    assert snap.resolve("oai", "/v1/chat/completions", "GET", websocket=True) == unsupported
    assert snap.resolve("oai", "/v1/responses/resp_1", "GET", websocket=True) == unsupported
    assert snap.resolve("cop", "/responses", "GET", websocket=True) == unsupported
