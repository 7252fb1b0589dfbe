"""The exact bytes clients get for every error the gateway writes itself.

Each provider family has one HTTP error shape and each bridged API one stream error event;
these tests compare whole bodies with literal bytes, first at the renderers, then through
the running gateway for every routing edge, rejection and upstream failure.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import aiohttp
import pytest
from yarl import URL

from aibridge.fakellm import Scenario
from aibridge.intercept.api import api_for
from aibridge.intercept.errors import circuit_open_body, error_body, error_type_for_event
from aibridge.intercept.sse import CHAT_DONE
from aibridge.providers.base import APIName, Family
from aibridge.recording.records import (
    ERROR_TYPES,
    REFUSAL_ERROR_TYPES,
    UPSTREAM_ERROR_TYPES,
    ErrorType,
)
from aibridge.testing.stack import TIMEOUT, Stack, stack

# --------------------------------------------------------------------------- the renderers


@pytest.mark.parametrize(
    ("family", "status", "expected"),
    [
        (
            "anthropic",
            400,
            b'{"type":"error","error":{"type":"invalid_request_error","message":"m"}}',
        ),
        ("anthropic", 413, b'{"type":"error","error":{"type":"request_too_large","message":"m"}}'),
        ("anthropic", 429, b'{"type":"error","error":{"type":"rate_limit_error","message":"m"}}'),
        ("anthropic", 501, b'{"type":"error","error":{"type":"api_error","message":"m"}}'),
        (
            "openai",
            401,
            b'{"error":{"message":"m","type":"invalid_request_error","param":null,'
            b'"code":"invalid_api_key"}}',
        ),
        (
            "openai",
            429,
            b'{"error":{"message":"m","type":"rate_limit_exceeded","param":null,'
            b'"code":"rate_limit_exceeded"}}',
        ),
        (
            "openai",
            502,
            b'{"error":{"message":"m","type":"server_error","param":null,"code":null}}',
        ),
    ],
)
def test_each_family_renders_its_http_error_body_byte_for_byte(
    family: Family, status: int, expected: bytes
) -> None:
    assert error_body(family, status, "m") == expected


def test_circuit_open_bodies_are_the_reference_ones() -> None:
    assert circuit_open_body("anthropic") == (
        b'{"type":"error","error":{"type":"overloaded_error","message":"circuit breaker is open"}}'
    )
    # No "param" member here: the reference's body (core §6.3) has none.
    assert circuit_open_body("openai") == (
        b'{"error":{"message":"circuit breaker is open","type":"server_error",'
        b'"code":"service_unavailable"}}'
    )


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        (
            "messages",
            b"event: error\n"
            b'data: {"type":"error","error":{"type":"timeout_error","message":"gone"}}\n\n',
        ),
        (
            "chat",
            b'data: {"error":{"message":"gone","type":"server_error","param":null,'
            b'"code":"timeout_error"}}\n\ndata: [DONE]\n\n',
        ),
        (
            "responses",
            b"event: error\n"
            b'data: {"type":"error","code":"timeout_error","message":"gone","param":null}\n\n',
        ),
    ],
)
def test_each_api_renders_its_stream_error_event_byte_for_byte(
    api: APIName, expected: bytes
) -> None:
    assert api_for(api).stream_error("gone", "timeout_error") == expected


def test_the_chat_stream_terminator_is_data_done() -> None:
    assert CHAT_DONE == b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- through the gateway

KEY = "sk-upstream-primary-0001"
LIMIT = 4096


@dataclass
class Case:
    """One request and the exact answer it must get."""

    name: str
    method: str
    path: str
    status: int
    body: bytes
    json: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    response_headers: dict[str, str] = field(default_factory=dict)


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def add_providers(s: Stack, ptype: str) -> None:
    """The providers the cases below need, all of type ``ptype``."""
    await s.add_provider("p", ptype, keys=[KEY])
    await s.add_provider("off", ptype, enabled=False)
    await s.add_provider("empty", ptype, keys=[])
    await s.add_provider("rl", ptype, keys=["sk-rate-limited-key-0001"])
    await s.add_provider("bad", ptype, keys=["sk-refused-key-00000001"])
    breaker = {"enabled": True, "failure_threshold": 1, "timeout_seconds": 30}
    await s.add_provider("cb", ptype, keys=[KEY], settings={"circuit_breaker": breaker})
    await s.add_provider("slow", ptype, keys=[KEY], settings={"upstream_timeout_seconds": 0.3})
    suffix = "" if ptype == "anthropic" else "/v1"
    await s.add_provider(
        "down", ptype, keys=[KEY], base_url=f"http://127.0.0.1:{unused_port()}{suffix}"
    )
    s.fake.key_scenarios["sk-rate-limited-key-0001"] = Scenario.http_error(429, retry_after="30")
    s.fake.key_scenarios["sk-refused-key-00000001"] = Scenario.http_error(401)


async def run_cases(s: Stack, cases: list[Case], auth: dict[str, str]) -> None:
    """Send every case and compare status and body byte for byte."""
    async with aiohttp.ClientSession() as session:
        for case in cases:
            headers = {**({} if case.anonymous else auth), **case.headers}
            url = URL(s.base + case.path, encoded=True)
            if case.name == "circuit open":
                # The first failure (the upstream's own 503) opens the breaker.
                s.fake.enqueue(Scenario.http_error(503))
                async with (
                    asyncio.timeout(TIMEOUT),
                    session.post(url, json=case.json, headers=headers) as resp,
                ):
                    assert resp.status == 503
            if case.name == "upstream timed out":
                release = asyncio.Event()
                s.fake.enqueue(Scenario.stall(release=release))
            async with (
                asyncio.timeout(TIMEOUT),
                session.request(
                    case.method, url, json=case.json, data=case.raw, headers=headers
                ) as resp,
            ):
                body = await resp.read()
                assert (case.name, resp.status, body) == (case.name, case.status, case.body)
                for name, value in case.response_headers.items():
                    assert resp.headers.get(name) == value, (case.name, name)
            if case.name == "upstream timed out":
                release.set()


def common_cases(api_path: str, request: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(name, method, path, status, body kwargs) shared by both families; bodies per family
    are filled in by the caller."""
    return [
        ("unknown provider", "POST", f"/nope{api_path}", 404, {"json": request}),
        ("wrong method", "GET", f"/p{api_path}", 405, {}),
        (
            "websocket",
            "GET",
            f"/p{api_path}",
            501,
            {"headers": {"Upgrade": "websocket", "Connection": "Upgrade"}},
        ),
        ("unsafe path", "GET", "/p/v1/models/a%2Fb", 400, {}),
        ("bad body", "POST", f"/p{api_path}", 400, {"json": {**request, "model": 5}}),
        ("too large", "POST", f"/p{api_path}", 413, {"raw": b"x" * (LIMIT + 1)}),
        ("disabled", "POST", f"/off{api_path}", 503, {"json": request}),
        ("no keys", "POST", f"/empty{api_path}", 502, {"json": request}),
        ("keys rate-limited", "POST", f"/rl{api_path}", 429, {"json": request}),
        ("keys refused", "POST", f"/bad{api_path}", 502, {"json": request}),
        ("circuit open", "POST", f"/cb{api_path}", 503, {"json": request}),
        ("upstream timed out", "POST", f"/slow{api_path}", 504, {"json": request}),
        ("upstream unreachable", "POST", f"/down{api_path}", 502, {"json": request}),
        (
            "byok not allowed",
            "POST",
            f"/p{api_path}",
            403,
            {"json": request, "byok": True},
        ),
    ]


# JSON-escaped: the message quotes "/" and "\\".
UNSAFE = (
    'invalid request path: a segment contains \\"/\\", \\"\\\\\\" or a control character '
    "(also percent-encoded); encode identifiers without them"
)
TOO_LARGE = f"Request body too large. The maximum allowed request body size is {LIMIT} bytes."
NO_KEYS = (
    "provider 'empty' has no API keys configured; an admin must add one "
    "(PATCH /api/v1/providers/empty with api_keys)"
)
BYOK_OFF = (
    "bring-your-own-key is not enabled for provider 'p'; "
    "drop X-AIBridge-Token or ask an admin to set settings.allow_byok"
)
UNREACHABLE = "upstream unreachable; retry shortly (the gateway log has the details)"
TIMED_OUT = "upstream timed out; retry shortly (the gateway log has the details)"
RATE_LIMITED = "all configured keys are rate-limited (retry after 30s)"
REFUSED = "all configured keys failed authentication. Contact your Administrator"
MISSING_KEY = "aibridge: missing gateway API key: send Authorization: Bearer <key>"


def anthropic_body(kind: str, message: str) -> bytes:
    return b'{"type":"error","error":{"type":"%s","message":"%s"}}' % (
        kind.encode(),
        message.encode(),
    )


def openai_body(message: str, kind: str, code: str | None) -> bytes:
    code_json = b"null" if code is None else b'"%s"' % code.encode()
    return b'{"error":{"message":"%s","type":"%s","param":null,"code":%s}}' % (
        message.encode(),
        kind.encode(),
        code_json,
    )


def build_cases(
    s: Stack, api_path: str, request: dict[str, Any], bodies: dict[str, bytes]
) -> list[Case]:
    cases = []
    for name, method, path, status, kwargs in common_cases(api_path, request):
        headers = dict(kwargs.get("headers", {}))
        if kwargs.get("byok"):
            headers["X-AIBridge-Token"] = s.user_token
        cases.append(
            Case(
                name,
                method,
                path,
                status,
                bodies[name],
                json=kwargs.get("json"),
                raw=kwargs.get("raw"),
                headers=headers,
                response_headers=(
                    {"Retry-After": "30"} if name in ("keys rate-limited", "circuit open") else {}
                ),
            )
        )
    return cases


async def test_anthropic_error_bodies_are_byte_exact(sqlite_url: str, tmp_path: Path) -> None:
    request = {
        "model": "claude-test",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with stack(sqlite_url, tmp_path, settings_overrides={"max_body_bytes": LIMIT}) as s:
        await add_providers(s, "anthropic")
        bodies = {
            "unknown provider": b'{"message":"route not supported: POST /nope/v1/messages"}',
            "wrong method": anthropic_body(
                "api_error", "GET is not allowed on /p/v1/messages; use POST"
            ),
            "websocket": anthropic_body(
                "api_error", "WebSocket transport is not supported, use HTTP"
            ),
            "unsafe path": anthropic_body("invalid_request_error", UNSAFE),
            "bad body": anthropic_body("invalid_request_error", "model must be a string"),
            "too large": anthropic_body("request_too_large", TOO_LARGE),
            "disabled": anthropic_body(
                "api_error", 'provider_disabled: AI provider \\"off\\" is disabled'
            ),
            "no keys": anthropic_body("api_error", NO_KEYS),
            "keys rate-limited": anthropic_body("rate_limit_error", RATE_LIMITED),
            "keys refused": anthropic_body("api_error", REFUSED),
            "circuit open": anthropic_body("overloaded_error", "circuit breaker is open"),
            "upstream timed out": anthropic_body("api_error", TIMED_OUT),
            "upstream unreachable": anthropic_body("api_error", UNREACHABLE),
            "byok not allowed": anthropic_body("permission_error", BYOK_OFF),
        }
        cases = build_cases(s, "/v1/messages", request, bodies)
        cases.append(
            Case(
                "no gateway key",
                "POST",
                "/p/v1/messages",
                401,
                anthropic_body("authentication_error", MISSING_KEY),
                json=request,
                anonymous=True,
            )
        )
        auth = {"x-api-key": s.user_token, "anthropic-version": "2023-06-01"}
        await run_cases(s, cases, auth)


async def test_openai_error_bodies_are_byte_exact(sqlite_url: str, tmp_path: Path) -> None:
    request = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    async with stack(sqlite_url, tmp_path, settings_overrides={"max_body_bytes": LIMIT}) as s:
        await add_providers(s, "openai")
        bodies = {
            "unknown provider": (
                b'{"message":"route not supported: POST /nope/v1/chat/completions"}'
            ),
            "wrong method": openai_body(
                "GET is not allowed on /p/v1/chat/completions; use POST", "server_error", None
            ),
            "websocket": openai_body(
                "WebSocket transport is not supported, use HTTP", "server_error", None
            ),
            "unsafe path": openai_body(UNSAFE, "invalid_request_error", None),
            "bad body": openai_body("model must be a string", "invalid_request_error", None),
            "too large": openai_body(TOO_LARGE, "invalid_request_error", "request_too_large"),
            "disabled": openai_body(
                'provider_disabled: AI provider \\"off\\" is disabled', "server_error", None
            ),
            "no keys": openai_body(NO_KEYS, "server_error", None),
            "keys rate-limited": openai_body(
                RATE_LIMITED, "rate_limit_exceeded", "rate_limit_exceeded"
            ),
            "keys refused": openai_body(REFUSED, "server_error", None),
            "circuit open": (
                b'{"error":{"message":"circuit breaker is open","type":"server_error",'
                b'"code":"service_unavailable"}}'
            ),
            "upstream timed out": openai_body(TIMED_OUT, "server_error", None),
            "upstream unreachable": openai_body(UNREACHABLE, "server_error", None),
            "byok not allowed": openai_body(BYOK_OFF, "invalid_request_error", "permission_denied"),
        }
        cases = build_cases(s, "/v1/chat/completions", request, bodies)
        cases += [
            Case(
                "no gateway key",
                "POST",
                "/p/v1/chat/completions",
                401,
                openai_body(MISSING_KEY, "invalid_request_error", "invalid_api_key"),
                json=request,
                anonymous=True,
            ),
            Case(
                "background response",
                "POST",
                "/p/v1/responses",
                501,
                openai_body(
                    'background requests are not supported by aibridge; omit \\"background\\"',
                    "server_error",
                    None,
                ),
                json={"model": "gpt-test", "input": "hi", "background": True},
            ),
        ]
        await run_cases(s, cases, {"Authorization": f"Bearer {s.user_token}"})


STALLED = "upstream stream stalled (no data before the timeout)"


@pytest.mark.parametrize(
    ("api", "ptype", "path", "request_body", "tail"),
    [
        (
            "messages",
            "anthropic",
            "/v1/messages",
            {
                "model": "claude-test",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            },
            b'event: error\ndata: {"type":"error","error":{"type":"timeout_error","message":"'
            + STALLED.encode()
            + b'"}}\n\n',
        ),
        (
            "chat",
            "openai",
            "/v1/chat/completions",
            {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            b'data: {"error":{"message":"'
            + STALLED.encode()
            + b'","type":"server_error","param":null,"code":"timeout_error"}}\n\n'
            + b"data: [DONE]\n\n",
        ),
        (
            "responses",
            "openai",
            "/v1/responses",
            {"model": "gpt-test", "input": "hi"},
            b'event: error\ndata: {"type":"error","code":"timeout_error","message":"'
            + STALLED.encode()
            + b'","param":null}\n\n',
        ),
    ],
)
async def test_a_stalled_stream_ends_with_exactly_its_apis_error_event(
    api: str,
    ptype: str,
    path: str,
    request_body: dict[str, Any],
    tail: bytes,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("slow", ptype, settings={"upstream_timeout_seconds": 0.3})
        release = asyncio.Event()
        s.fake.enqueue(Scenario.stall(release=release))
        headers = (
            {"x-api-key": s.user_token, "anthropic-version": "2023-06-01"}
            if ptype == "anthropic"
            else {"Authorization": f"Bearer {s.user_token}"}
        )
        try:
            async with (
                aiohttp.ClientSession() as session,
                asyncio.timeout(TIMEOUT),
                session.post(
                    f"{s.base}/slow{path}", json={**request_body, "stream": True}, headers=headers
                ) as resp,
            ):
                assert resp.status == 200
                raw = await resp.read()
        finally:
            release.set()
        # The events relayed before the stall, then exactly the API's error event.
        assert raw.endswith(tail), raw[-400:]
        assert not raw.endswith(tail + tail)


# --------------------------------------------------------------------------- classification


def test_recorded_error_types_have_one_definition() -> None:
    assert get_args(ErrorType) == ERROR_TYPES
    assert set(ERROR_TYPES) > UPSTREAM_ERROR_TYPES
    assert {"unknown", "client_disconnected", "gateway_restart", *REFUSAL_ERROR_TYPES} == (
        set(ERROR_TYPES) - UPSTREAM_ERROR_TYPES
    )
    # Documentation order: the refusals last, in the order the limits are checked.
    assert ERROR_TYPES[-len(REFUSAL_ERROR_TYPES) :] == REFUSAL_ERROR_TYPES


def test_upstream_error_event_types_map_onto_recorded_types() -> None:
    for kind in UPSTREAM_ERROR_TYPES:
        assert error_type_for_event(kind) == kind
    assert error_type_for_event("overloaded_error") == "overloaded"
    assert error_type_for_event("rate_limit_exceeded") == "rate_limited"
    # Only an upstream failure can come from the upstream: never our own types.
    for kind in ("client_disconnected", "gateway_restart", "unknown", "whatever"):
        assert error_type_for_event(kind) == "server_error"
