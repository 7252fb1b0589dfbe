"""Provider-shaped error bodies, the rejection exception, and error classification.

Two HTTP error shapes exist, one per provider family, and each has exactly one renderer
here: :func:`anthropic_error` and :func:`openai_error`. Every error the gateway answers on
the data plane (routing, authentication, rejections, upstream failures, the circuit
breaker) and every stream error event whose payload has the same shape goes through them,
so an SDK always gets the error object it knows. The per-API stream error events live with
their API (``intercept/<api>/errors.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from aibridge.httputil import route_not_supported
from aibridge.providers.base import Family
from aibridge.providers.circuitbreaker import CIRCUIT_OPEN_MESSAGE, CIRCUIT_OPEN_STATUS
from aibridge.providers.routes import RoutingError
from aibridge.recording.records import UPSTREAM_ERROR_TYPES, ErrorType

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
    529: "overloaded_error",
}
_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}


# What a client is told when the upstream cannot be reached: the cause (host, port, OS
# error) describes the gateway's network and stays in the log and the end record.
UPSTREAM_UNREACHABLE = "upstream unreachable; retry shortly (the gateway log has the details)"
UPSTREAM_TIMED_OUT = "upstream timed out; retry shortly (the gateway log has the details)"


class Rejection(Exception):
    """The gateway refuses a request before calling upstream: answer ``status`` with
    ``message`` (safe to show the client) in the provider's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self, family: Family) -> web.Response:
        """The provider-shaped error response for this rejection."""
        return error_response(family, self.status, self.message)


# --- the two shapes ---------------------------------------------------------------------


def anthropic_error(kind: str, message: str) -> bytes:
    """Anthropic's error object: ``{"type":"error","error":{"type":kind,"message":…}}`` (an
    HTTP error body, and the data of a Messages stream's ``error`` event)."""
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def openai_error(message: str, kind: str, code: str | None, *, param: bool = True) -> bytes:
    """OpenAI's error object: ``{"error":{"message","type","param":null,"code"}}`` (an HTTP
    error body, and the data of a Chat stream's error chunk). ``param=False`` leaves the
    ``param`` member out, as the reference's circuit-breaker body does."""
    if param:
        inner = {"message": message, "type": kind, "param": None, "code": code}
    else:
        inner = {"message": message, "type": kind, "code": code}
    return orjson.dumps({"error": inner})


def error_body(family: Family, status: int, message: str) -> bytes:
    """JSON error body for ``status`` in the provider's own shape, so SDKs raise the right
    exception."""
    if family == "anthropic":
        return anthropic_error(_ANTHROPIC_TYPES.get(status, "api_error"), message)
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    return openai_error(message, kind, code)


def circuit_open_body(family: Family) -> bytes:
    """The breaker's rejection body (reference core §6.3): Anthropic's
    ``overloaded_error``, OpenAI's ``server_error`` with code ``service_unavailable``."""
    if family == "anthropic":
        return anthropic_error("overloaded_error", CIRCUIT_OPEN_MESSAGE)
    return openai_error(CIRCUIT_OPEN_MESSAGE, "server_error", "service_unavailable", param=False)


# --- responses --------------------------------------------------------------------------


def error_response(
    family: Family,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A complete provider-shaped error response."""
    return web.Response(
        status=status,
        body=error_body(family, status, message),
        content_type="application/json",
        headers=headers,
    )


def refusal_body(family: Family, status: int, error_type: str, message: str) -> bytes:
    """The body of a request the gateway's limits refused (403 model access, 429 the
    rates, concurrency and budgets), in the provider's shape: Anthropic's
    ``permission_error`` / ``rate_limit_error``; OpenAI's object with the refusal's error
    type as ``code`` (``budget_exceeded`` typed ``insufficient_quota``, as OpenAI types an
    exhausted quota), so a client can tell which limit it hit."""
    if family == "anthropic":
        return anthropic_error(_ANTHROPIC_TYPES.get(status, "api_error"), message)
    if status == 429:
        kind = "insufficient_quota" if error_type == "budget_exceeded" else "rate_limit_exceeded"
    else:
        kind = "invalid_request_error"
    return openai_error(message, kind, error_type)


def refusal_response(
    family: Family,
    status: int,
    error_type: str,
    message: str,
    headers: Mapping[str, str],
) -> web.Response:
    """A complete refusal response: :func:`refusal_body` with ``headers`` (Retry-After and
    the ``x-ratelimit-*`` that apply)."""
    return web.Response(
        status=status,
        body=refusal_body(family, status, error_type, message),
        content_type="application/json",
        headers=headers,
    )


def circuit_open_response(family: Family, retry_after: int) -> web.Response:
    """503 with ``Retry-After`` (whole seconds) and :func:`circuit_open_body`."""
    return web.Response(
        status=CIRCUIT_OPEN_STATUS,
        body=circuit_open_body(family),
        content_type="application/json",
        headers={"Retry-After": str(retry_after)},
    )


def routing_error_response(request: web.Request, error: RoutingError) -> web.Response:
    """The answer to a request that has no route: the provider's shape, or the gateway's
    own 404 when the request names no provider or no route under it."""
    if error.family is None:
        return route_not_supported(request)
    return error_response(error.family, error.status, error.message)


def family_for_request(tail: str, headers: Mapping[str, str]) -> Family:
    """The error shape a client expects, judged from its request alone (for answers given
    before the provider is looked up): Anthropic for its routes or an
    ``anthropic-version`` header (its SDKs always send one), else OpenAI."""
    if tail.startswith(("/v1/messages", "/api/event_logging/")) or "anthropic-version" in headers:
        return "anthropic"
    return "openai"


# --- classification ---------------------------------------------------------------------


def error_type_for_status(status: int) -> ErrorType:
    """Recorded error type for an upstream/gateway HTTP status."""
    if status in (400, 404, 409, 413, 422):
        return "bad_request"
    if status in (401, 403):
        return "unauthorized"
    if status == 429:
        return "rate_limited"
    if status in (503, 529):
        return "overloaded"
    if status == 408 or status == 504:
        return "timeout"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "bad_request"
    return "unknown"


# Provider error ``type``s (Anthropic and OpenAI) of errors reported inside a 200 response
# (a mid-stream error event), mapped onto the recorded error types; a type that already is
# one of those is kept.
_EVENT_ERROR_TYPES: dict[str, ErrorType] = {
    **{kind: kind for kind in UPSTREAM_ERROR_TYPES},
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
    "authentication_error": "unauthorized",
    "permission_error": "unauthorized",
    "rate_limit_error": "rate_limited",
    "rate_limit_exceeded": "rate_limited",
    "overloaded_error": "overloaded",
    "api_error": "server_error",
    "timeout_error": "timeout",
}


def error_type_for_event(kind: str) -> ErrorType:
    """Recorded error type for a provider error ``type`` seen mid-stream (e.g. Anthropic's
    ``overloaded_error`` → ``overloaded``); an unknown type is an upstream failure."""
    return _EVENT_ERROR_TYPES.get(kind, "server_error")


# The provider error kind a gateway-written stream error event carries, by error type.
_EVENT_KINDS: dict[str, str] = {"timeout": "timeout_error", "overloaded": "overloaded_error"}


def event_kind(error_type: ErrorType) -> str:
    """The provider error ``type`` for a stream error event the gateway writes itself."""
    return _EVENT_KINDS.get(error_type, "api_error")
