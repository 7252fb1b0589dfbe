"""Routing a data-plane request: ``(name, path, method)`` to what serves it, in one call.

A request under ``/<name>`` resolves against one provider snapshot to exactly one of:

* :class:`BridgedRoute`: an API the gateway intercepts and records (provider + API);
* :class:`PassthroughRoute`: a provider path relayed as it is (models, count_tokens, …);
* :class:`WebSocketRoute`: OpenAI Responses over WebSocket (a ``GET`` upgrade on the
  Responses route of an OpenAI-protocol provider with ``settings.responses_websocket``);
* :class:`RoutingError`: why neither — status, message, and the provider's error shape.

The checks run in a fixed order, so every edge keeps its answer: unknown provider 404,
disabled provider 503, WebSocket upgrade on any other route (or with it switched off)
501, unsafe path 400, unknown route 404, a bridged route with another method than POST
405.
"""

from __future__ import annotations

from dataclasses import dataclass

from aibridge.providers import copilot
from aibridge.providers.base import APIName, DisabledProvider, Family, Provider
from aibridge.providers.paths import UnsafePath, check_path

__all__ = [
    "NOT_FOUND",
    "BridgedRoute",
    "PassthroughRoute",
    "RoutingError",
    "WebSocketRoute",
    "match_route",
    "resolve",
]


@dataclass(frozen=True, slots=True)
class BridgedRoute:
    """A path the gateway intercepts: ``api`` on ``provider``.

    ``upstream_suffix`` is the checked, still percent-encoded path to append to the base
    URL; ``label`` the decoded path under the provider (breaker and log label).
    """

    provider: Provider
    api: APIName
    upstream_suffix: str
    label: str


@dataclass(frozen=True, slots=True)
class PassthroughRoute:
    """A provider path relayed unchanged and not recorded (fields as :class:`BridgedRoute`)."""

    provider: Provider
    upstream_suffix: str
    label: str


@dataclass(frozen=True, slots=True)
class WebSocketRoute:
    """OpenAI Responses over WebSocket on ``provider`` (fields as :class:`BridgedRoute`)."""

    provider: Provider
    upstream_suffix: str
    label: str


@dataclass(frozen=True, slots=True)
class RoutingError:
    """Why a request has no route.

    ``family`` is the error shape of the provider the request named; None for the
    gateway's own 404 (no provider, or no route under it), which names no provider.
    """

    status: int
    message: str
    family: Family | None = None


NOT_FOUND = RoutingError(404, "route not supported")
"""No provider of that name, or no route under it (the gateway's own 404)."""

WEBSOCKET_UNSUPPORTED = "WebSocket transport is not supported, use HTTP"

Route = BridgedRoute | PassthroughRoute

# (path under the provider prefix, exact?, bridged API or None for passthrough).
# Longest match wins.
_ANTHROPIC_ROUTES: tuple[tuple[str, bool, APIName | None], ...] = (
    ("/v1/messages", True, "messages"),
    ("/v1/messages/count_tokens", True, None),
    ("/v1/models", True, None),
    ("/v1/models/", False, None),
    ("/api/event_logging/", False, None),
)
# Bedrock: Messages is bridged; the models list is answered by the gateway from the
# settings (Bedrock has no Anthropic models endpoint). Mantle serves the OpenAI APIs too.
_BEDROCK_ROUTES: tuple[tuple[str, bool, APIName | None], ...] = (
    ("/v1/messages", True, "messages"),
    ("/v1/models", True, None),
    ("/v1/models/", False, None),
)
_MANTLE_ROUTES = (
    *_BEDROCK_ROUTES,
    ("/v1/chat/completions", True, "chat"),
    ("/v1/responses", True, "responses"),
)
# OpenAI routes live under ``/<name>/v1``; the base URL already carries the version.
_OPENAI_ROUTES: tuple[tuple[str, bool, APIName | None], ...] = (
    ("/chat/completions", True, "chat"),
    ("/responses", True, "responses"),
    ("/responses/", False, None),
    ("/conversations", True, None),
    ("/conversations/", False, None),
    ("/models", True, None),
    ("/models/", False, None),
)


def match_route(provider: Provider, raw_path: str) -> Route | None:
    """The route for ``raw_path`` (the raw, still percent-encoded path after ``/<name>``),
    or None when the provider has none.

    Raises :class:`~aibridge.providers.paths.UnsafePath` (a 400) for a path that could
    resolve outside the route it names.
    """
    path = check_path(raw_path)
    decoded, raw = path.decoded, path.raw
    if copilot.is_copilot(provider.type):
        # Copilot: its API has no /v1 segment, and neither do its routes here.
        sub, raw_sub = decoded, raw
        table = copilot.ROUTES
    elif provider.family == "openai":
        if not decoded.startswith("/v1/") and decoded != "/v1":
            return None
        # Cut the first segment ("v1", maybe percent-encoded) from the raw path by
        # segment, not by length: checked paths have no encoded "/", so the segments of
        # both forms line up.
        sub = decoded[3:]
        cut = raw.find("/", 1)
        raw_sub = raw[cut:] if cut > 0 else ""
        table = _OPENAI_ROUTES
    else:
        sub, raw_sub = decoded, raw
        table = _ANTHROPIC_ROUTES
        if provider.bedrock is not None:
            table = _MANTLE_ROUTES if provider.bedrock.protocol == "mantle" else _BEDROCK_ROUTES
    best: tuple[str, bool, APIName | None] | None = None
    for entry in table:
        pattern, exact, _api = entry
        hit = sub == pattern if exact else sub.startswith(pattern)
        if hit and (best is None or len(pattern) > len(best[0])):
            best = entry
    if best is None:
        return None
    api = best[2]
    if api is None:
        return PassthroughRoute(provider, raw_sub, decoded)
    return BridgedRoute(provider, api, raw_sub, decoded)


def resolve(
    provider: Provider | DisabledProvider | None,
    name: str,
    raw_path: str,
    method: str,
    *,
    websocket: bool = False,
) -> Route | WebSocketRoute | RoutingError:
    """Route a request for provider ``name`` (``provider`` is what the snapshot holds under
    that name) and ``raw_path``; see the module docstring for the order of the checks.

    ``websocket`` is whether the client asked to upgrade the connection.
    """
    if provider is None:
        return NOT_FOUND
    family = provider.family
    if isinstance(provider, DisabledProvider):
        return RoutingError(503, f'provider_disabled: AI provider "{name}" is disabled', family)
    if websocket:
        return _websocket_route(provider, raw_path, method)
    try:
        route = match_route(provider, raw_path)
    except UnsafePath as exc:
        return RoutingError(400, str(exc), family)
    if route is None:
        return NOT_FOUND
    if method != "POST" and isinstance(route, BridgedRoute):
        # The label is the decoded path under the provider, so this is the request's path.
        return RoutingError(
            405, f"{method} is not allowed on /{name}{route.label}; use POST", family
        )
    return route


def _websocket_route(
    provider: Provider, raw_path: str, method: str
) -> WebSocketRoute | RoutingError:
    """An upgrade request: the Responses route of a provider that serves it over WebSocket,
    else the 501 that tells clients (Codex) to use HTTP."""
    unsupported = RoutingError(501, WEBSOCKET_UNSUPPORTED, provider.family)
    if (
        method != "GET"
        or provider.family != "openai"
        # The Copilot API has no Responses WebSocket: its clients go straight to HTTP.
        or provider.type == "copilot"
        or not provider.options.responses_websocket
    ):
        return unsupported
    try:
        route = match_route(provider, raw_path)
    except UnsafePath:
        # Not the Responses route either: the upgrade's answer comes before the path's.
        return unsupported
    if not isinstance(route, BridgedRoute) or route.api != "responses":
        return unsupported
    return WebSocketRoute(provider, route.upstream_suffix, route.label)
