"""Hostile input against bounded resources (issue 7, "Bounded resources").

Every read the gateway does on behalf of someone else is bounded: upstream bodies
(item 11), JSON depth (12), slow clients (13), metric label values (14), admin API
timestamps and database outages (15) and aiohttp's own 400s in the log (16).
Real servers on loopback throughout; memory is measured on a real ``aibridge serve``
subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from aibridge.clock import FakeClock
from aibridge.fakellm import Scenario
from aibridge.logthrottle import throttle_bad_request_logs
from aibridge.store.models import Interception
from aibridge.testing.outage import pg_outage
from aibridge.testing.replicas import Replica, start_replica
from aibridge.testing.stack import TIMEOUT, Stack, stack

CHAT_MODEL = "gpt-4o-mini"
MIB = 1024 * 1024

# --------------------------------------------------------------------------- helpers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ScriptedUpstream:
    """An upstream whose answer to each request is chosen by the provider key it carries
    (``Authorization: Bearer <key>``); ``default`` answers every other key."""

    default: Handler
    by_key: dict[str, Handler] = field(default_factory=dict)
    seen_keys: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Dispatch on the bearer key."""
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen_keys.append(key)
        await request.read()
        return await self.by_key.get(key, self.default)(request)


@asynccontextmanager
async def scripted_upstream(upstream: ScriptedUpstream) -> AsyncIterator[str]:
    """Serve ``upstream`` on a loopback port; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield str(server.make_url("")).rstrip("/")


def streamed_body(status: int, size: int, content_type: str = "application/json") -> Handler:
    """A handler that streams ``size`` bytes (chunked, no Content-Length) without ever
    holding more than one 64 KiB chunk, and stops quietly when the reader hangs up."""
    chunk = b'{"error":{"message":"' + b"x" * (64 * 1024 - 21)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        await resp.prepare(request)
        sent = 0
        try:
            while sent < size:
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
        except ConnectionError:
            pass  # the gateway stopped reading and closed the connection, as it should
        return resp

    return handler


def json_answer(status: int, body: Any) -> Handler:
    """A handler answering ``body`` as JSON with ``status``."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handler


def chat_completion(model: str = CHAT_MODEL) -> dict[str, Any]:
    """A minimal valid Chat Completions answer."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def chat_request(model: str = CHAT_MODEL, stream: bool = False) -> dict[str, Any]:
    """A minimal Chat Completions request."""
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


async def post_json(
    session: aiohttp.ClientSession, url: str, body: Any, token: str
) -> tuple[int, str, bytes]:
    """POST ``body``; returns (status, content type, raw body)."""
    async with (
        asyncio.timeout(TIMEOUT),
        session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


async def last_interception(s: Stack, provider: str) -> Interception:
    """The provider's newest interception once everything queued is written."""
    await s.flush_records()
    async with s.services.sessions() as session:
        row = await session.scalar(
            select(Interception)
            .where(Interception.provider_name == provider)
            .order_by(Interception.started_at.desc())
            .limit(1)
        )
    assert row is not None
    return row


async def assert_ended_as_server_error(s: Stack, provider: str, says: str) -> None:
    """The provider's newest interception ended as a server error whose message has
    ``says``."""
    row = await last_interception(s, provider)
    assert row.error_type == "server_error"
    assert row.error_message is not None and says in row.error_message


# ------------------------------------------------------------ a real `aibridge serve` process


@asynccontextmanager
async def serve_process(
    tmp_path: Path, *, workers: int = 1, **env: str
) -> AsyncIterator[tuple[Replica, str]]:
    """``aibridge serve`` (with ``workers`` processes) with a fresh SQLite data dir; ``env``
    adds ``AIBRIDGE_*`` settings. Yields the replica and its first admin key."""
    gw = await start_replica(
        "gw", None, tmp_path / "data", env=env, args=["--workers", str(workers)], listening=workers
    )
    try:
        token = gw.admin_token()
        assert token, "first start must print the admin key"
        yield gw, token
    finally:
        await gw.stop()


async def add_provider(
    gw: Replica,
    token: str,
    session: aiohttp.ClientSession,
    name: str,
    base_url: str,
    keys: list[str],
) -> None:
    """Create an OpenAI provider through the admin API and wait until it serves."""
    body = {"type": "openai", "name": name, "base_url": base_url, "api_keys": keys}
    headers = {"Authorization": f"Bearer {token}"}
    async with asyncio.timeout(TIMEOUT):
        async with session.post(f"{gw.url}/api/v1/providers", json=body, headers=headers) as r:
            assert r.status == 201, await r.text()
        while True:
            async with session.get(f"{gw.url}/readyz") as r:
                data = await r.json()
            if name in data.get("providers", {}):
                return
            await asyncio.sleep(0.05)  # polling a state change, bounded by the timeout


# --------------------------------------------------------------------------- 11. upstream bodies


async def test_oversized_upstream_error_body_gets_a_502_that_says_why(
    sqlite_url: str, tmp_path: Path
) -> None:
    upstream = ScriptedUpstream(default=streamed_body(500, 2 * MIB))
    async with (
        scripted_upstream(upstream) as url,
        stack(
            sqlite_url, tmp_path, settings_overrides={"max_upstream_error_bytes": 256 * 1024}
        ) as s,
        aiohttp.ClientSession() as session,
    ):
        await s.add_provider("big", "openai", base_url=url + "/v1")
        status, ctype, raw = await post_json(
            session, f"{s.base}/big/v1/chat/completions", chat_request(), s.user_token
        )
        assert status == 502, raw
        assert ctype == "application/json"
        error = orjson.loads(raw)["error"]
        assert "larger than the 262144 bytes limit" in error["message"]
        assert "HTTP 500" in error["message"]
        await assert_ended_as_server_error(s, "big", "262144 bytes limit")


async def test_oversized_blocking_response_gets_a_502_that_says_why(
    sqlite_url: str, tmp_path: Path
) -> None:
    upstream = ScriptedUpstream(default=streamed_body(200, 4 * MIB))
    async with (
        scripted_upstream(upstream) as url,
        stack(sqlite_url, tmp_path, settings_overrides={"max_upstream_body_bytes": MIB}) as s,
        aiohttp.ClientSession() as session,
    ):
        await s.add_provider("big", "openai", base_url=url + "/v1")
        status, _, raw = await post_json(
            session, f"{s.base}/big/v1/chat/completions", chat_request(), s.user_token
        )
        assert status == 502, raw
        assert "larger than the 1MiB limit" in orjson.loads(raw)["error"]["message"]
        row = await last_interception(s, "big")
        assert row.error_message is not None and "1MiB limit" in row.error_message
        # A normal answer under the cap is still relayed unchanged.
        upstream.default = json_answer(200, chat_completion())
        status, _, raw = await post_json(
            session, f"{s.base}/big/v1/chat/completions", chat_request(), s.user_token
        )
        assert status == 200 and orjson.loads(raw) == chat_completion()


def endless_event(first: bytes, size: int) -> Handler:
    """A stream that sends ``first`` (whole events), then one event that never ends:
    ``size`` bytes of a ``data:`` line without its blank line."""
    filler = b"x" * (64 * 1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(first)
            await resp.write(b'data: {"choices":[{"delta":{"content":"')
            sent = 0
            while sent < size:
                await resp.write(filler)
                sent += len(filler)
            await resp.write_eof()
        except ConnectionError:
            pass  # the gateway gave up on the stream, as it should
        return resp

    return handler


async def test_an_endless_upstream_stream_event_ends_the_stream_with_an_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    first = (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"'
        + CHAT_MODEL.encode()
        + b'","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    )
    upstream = ScriptedUpstream(default=endless_event(first, 16 * MIB))
    async with (
        scripted_upstream(upstream) as url,
        stack(sqlite_url, tmp_path, settings_overrides={"max_upstream_body_bytes": MIB}) as s,
        aiohttp.ClientSession() as session,
    ):
        await s.add_provider("endless", "openai", base_url=url + "/v1")
        status, _, raw = await post_json(
            session,
            f"{s.base}/endless/v1/chat/completions",
            chat_request(stream=True),
            s.user_token,
        )
        assert status == 200
        # The whole event before the endless one reached the client unchanged, then an
        # error event; none of the endless event's bytes did.
        assert raw.startswith(first), raw[:200]
        rest = raw[len(first) :]
        assert len(rest) < 4096, len(rest)
        assert b"larger than the 1MiB limit" in rest and b"xxxx" not in rest
        await assert_ended_as_server_error(s, "endless", "stream event larger")


async def test_failover_after_a_huge_refusal_uses_the_next_key(
    sqlite_url: str, tmp_path: Path
) -> None:
    upstream = ScriptedUpstream(
        default=json_answer(200, chat_completion()),
        by_key={"sk-refused-key-00001": streamed_body(429, 8 * MIB)},
    )
    async with (
        scripted_upstream(upstream) as url,
        stack(sqlite_url, tmp_path) as s,
        aiohttp.ClientSession() as session,
    ):
        await s.add_provider(
            "pool",
            "openai",
            base_url=url + "/v1",
            keys=["sk-refused-key-00001", "sk-good-key-0002"],
        )
        status, _, raw = await post_json(
            session, f"{s.base}/pool/v1/chat/completions", chat_request(), s.user_token
        )
        assert status == 200, raw
        assert upstream.seen_keys == ["sk-refused-key-00001", "sk-good-key-0002"]


async def test_huge_upstream_error_bodies_do_not_raise_peak_memory(tmp_path: Path) -> None:
    """Two 200 MB error bodies (one relayed error, one refused pooled key) through a real
    ``aibridge serve``: its peak RSS (VmHWM) grows by less than 50 MB. A passthrough route
    streams a third one to the client in full, also without buffering it."""
    huge = 200 * 1000 * 1000
    upstream = ScriptedUpstream(
        default=streamed_body(500, huge),
        by_key={
            "sk-refused-key-00001": streamed_body(429, huge),
            "sk-good-key-0002": json_answer(200, chat_completion()),
            "sk-small-error-0003": json_answer(500, {"error": {"message": "small"}}),
            "sk-small-refusal-04": json_answer(429, {"error": {"message": "slow down"}}),
        },
    )
    async with (
        scripted_upstream(upstream) as url,
        serve_process(tmp_path) as (gw, token),
        aiohttp.ClientSession() as session,
    ):
        await add_provider(gw, token, session, "errors", url + "/v1", ["sk-huge-error-00005"])
        await add_provider(
            gw, token, session, "refusal", url + "/v1", ["sk-refused-key-00001", "sk-good-key-0002"]
        )
        await add_provider(gw, token, session, "warm", url + "/v1", ["sk-small-error-0003"])
        await add_provider(
            gw, token, session, "warmpool", url + "/v1", ["sk-small-refusal-04", "sk-good-key-0002"]
        )
        # Warm up the same code paths with small bodies first, so the measurement sees
        # only what the huge bodies cost.
        for name, expected in (("warm", 500), ("warmpool", 200)):
            for _ in range(3):
                status, _, raw = await post_json(
                    session,
                    f"{gw.url}/{name}/v1/chat/completions",
                    chat_request(),
                    token,
                )
                assert status == expected, raw
        auth = {"Authorization": f"Bearer {token}"}
        async with (
            asyncio.timeout(TIMEOUT),
            session.get(f"{gw.url}/warm/v1/models", headers=auth) as r,
        ):
            assert r.status == 500 and await r.read()
        before = gw.peak_rss_bytes()
        relayed = await post_json(
            session, f"{gw.url}/errors/v1/chat/completions", chat_request(), token
        )
        failed_over = await post_json(
            session, f"{gw.url}/refusal/v1/chat/completions", chat_request(), token
        )
        growth = gw.peak_rss_bytes() - before
        print(f"peak RSS before {before / MIB:.1f} MiB, growth {growth / MIB:.1f} MiB")
        assert growth < 50 * 1000 * 1000, f"peak RSS grew by {growth / MIB:.1f} MiB"
        assert relayed[0] == 502, relayed
        assert failed_over[0] == 200, failed_over

        streamed = 0
        async with (
            asyncio.timeout(4 * TIMEOUT),
            session.get(f"{gw.url}/errors/v1/models", headers=auth) as resp,
        ):
            assert resp.status == 500
            async for chunk in resp.content.iter_any():
                streamed += len(chunk)
        assert streamed >= huge
        growth = gw.peak_rss_bytes() - before
        print(f"after a 200 MB passthrough stream: growth {growth / MIB:.1f} MiB")
        assert growth < 50 * 1000 * 1000, f"peak RSS grew by {growth / MIB:.1f} MiB"


# --------------------------------------------------------------------------- 12. deep JSON


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """``depth`` arrays inside each other around ``leaf``."""
    return b"[" * depth + leaf + b"]" * depth


# (API, provider type, path under the provider, request body with a deep member)
DEEP_REQUESTS = [
    (
        "messages",
        "anthropic",
        "/v1/messages",
        b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}],'
        b'"metadata":{"user_id":"u"},"tools":' + nested(20_000) + b"}",
    ),
    (
        "chat",
        "openai",
        "/v1/chat/completions",
        b'{"model":"gpt-x","messages":[{"role":"user","content":' + nested(20_000) + b"}]}",
    ),
    (
        "responses",
        "openai",
        "/v1/responses",
        b'{"model":"gpt-x","input":' + nested(3_000) + b"}",
    ),
]


async def test_deeply_nested_request_bodies_get_a_400_on_every_api(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s, aiohttp.ClientSession() as session:
        for api, ptype, path, body in DEEP_REQUESTS:
            await s.add_provider(api, ptype)
            headers = {
                "Authorization": f"Bearer {s.user_token}",
                "Content-Type": "application/json",
            }
            async with (
                asyncio.timeout(TIMEOUT),
                session.post(f"{s.base}/{api}{path}", data=body, headers=headers) as resp,
            ):
                assert resp.status == 400, (api, await resp.text())
                assert resp.content_type == "application/json"
                data = await resp.json()
            message = data["error"]["message"]
            assert "nests JSON too deeply" in message, (api, message)
            if ptype == "anthropic":
                assert data["type"] == "error"
                assert data["error"]["type"] == "invalid_request_error"
            else:
                assert data["error"]["type"] == "invalid_request_error"
        assert s.fake.requests == []  # refused before anything went upstream


def deep_member(body: dict[str, Any]) -> bytes:
    """``body`` as JSON with an extra member nested 20,000 levels deep."""
    return orjson.dumps(body)[:-1] + b',"x_deep":' + nested(20_000) + b"}"


def sse_bytes(events: list[tuple[str | None, bytes]]) -> bytes:
    """An SSE stream of (event name, data) pairs."""
    out = b""
    for name, data in events:
        out += (f"event: {name}\n".encode() if name else b"") + b"data: " + data + b"\n\n"
    return out


def raw_answer(body: bytes, content_type: str) -> Handler:
    """A handler answering ``body`` byte for byte."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type)

    return handler


def deep_upstream_answers() -> list[tuple[str, str, str, dict[str, Any], bytes, str]]:
    """(API, provider type, path, request, upstream answer, content type): answers whose
    JSON nests far deeper than a parser's recursion limit, blocking and streamed."""
    chat_chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": CHAT_MODEL,
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
    }
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    response = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-x",
        "output": [
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": None}
        ],
        "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
    }
    # A hosted tool whose arguments nest deeper than orjson will re-encode (255 levels).
    hosted = orjson.dumps(response).replace(b'"action":null', b'"action":' + nested(300))
    messages_req = {
        "model": "claude-x",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    chat_req = chat_request()
    responses_req = {"model": "gpt-x", "input": "hi"}
    return [
        ("messages", "anthropic", "/v1/messages", messages_req, deep_member(message), "json"),
        (
            "messages",
            "anthropic",
            "/v1/messages",
            {**messages_req, "stream": True},
            sse_bytes(
                [
                    ("message_start", deep_member({"type": "message_start", "message": message})),
                    ("message_stop", b'{"type":"message_stop"}'),
                ]
            ),
            "sse",
        ),
        (
            "chat",
            "openai",
            "/v1/chat/completions",
            chat_req,
            deep_member(chat_completion()),
            "json",
        ),
        (
            "chat",
            "openai",
            "/v1/chat/completions",
            {**chat_req, "stream": True},
            sse_bytes([(None, deep_member(chat_chunk)), (None, b"[DONE]")]),
            "sse",
        ),
        ("responses", "openai", "/v1/responses", responses_req, deep_member(response), "json"),
        ("responses", "openai", "/v1/responses", responses_req, hosted, "json"),
        (
            "responses",
            "openai",
            "/v1/responses",
            {**responses_req, "stream": True},
            sse_bytes(
                [
                    (
                        "response.completed",
                        deep_member({"type": "response.completed", "response": response}),
                    )
                ]
            ),
            "sse",
        ),
    ]


async def test_deeply_nested_upstream_answers_are_relayed_unchanged(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The observers that parse a copy of the answer give up on it; the client still gets
    the upstream's bytes unchanged."""
    upstream = ScriptedUpstream(default=json_answer(200, {}))
    async with (
        scripted_upstream(upstream) as url,
        stack(sqlite_url, tmp_path) as s,
        aiohttp.ClientSession() as session,
    ):
        await s.add_provider("anthropic", "anthropic", base_url=url)
        await s.add_provider("openai", "openai", base_url=url + "/v1")
        for index, (api, ptype, path, body, answer, kind) in enumerate(deep_upstream_answers()):
            ctype = "text/event-stream" if kind == "sse" else "application/json"
            upstream.default = raw_answer(answer, ctype)
            headers = {"Authorization": f"Bearer {s.user_token}"}
            async with (
                asyncio.timeout(TIMEOUT),
                session.post(f"{s.base}/{ptype}{path}", json=body, headers=headers) as resp,
            ):
                raw = await resp.read()
                assert resp.status == 200, (index, api, kind, raw[:300])
            assert raw == answer, (index, api, kind)


async def test_deeply_nested_admin_bodies_get_a_400_envelope(
    sqlite_url: str, tmp_path: Path
) -> None:
    """orjson stops at 1,024 levels; below that the handlers' validation answers."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("p", "openai")
        headers = {**s.admin_headers(), "Content-Type": "application/json"}
        for depth in (1_000, 20_000):
            deep = nested(depth)
            for method, path, body in (
                ("POST", "/api/v1/providers", b'{"type":"openai","name":' + deep + b"}"),
                ("PATCH", "/api/v1/providers/p", b'{"settings":{"circuit_breaker":' + deep + b"}}"),
                ("POST", "/api/v1/users", b'{"username":"u","role":"member","x":' + deep + b"}"),
                ("PATCH", "/api/v1/users/dev", b'{"email":' + deep + b"}"),
                ("POST", "/api/v1/users/dev/keys", b'{"name":"k","expires_at":' + deep + b"}"),
            ):
                async with asyncio.timeout(TIMEOUT):
                    resp = await s.client.request(method, path, data=body, headers=headers)
                    assert resp.status == 400, (depth, path, await resp.text())
                    assert resp.content_type == "application/json"
                    assert (await resp.json())["message"]


# --------------------------------------------------------------------------- 15. admin API

EXTREME_TIMES = [
    "9999-12-31T23:59:59-23:59",  # past year 9999 once in UTC
    "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
    "0001-01-01T00:30:00+23:59",
]


def crafted_cursor(started: str) -> str:
    """A cursor in this API's format pointing at ``started``."""
    raw = orjson.dumps([started, "3f1e7b1c-8d7e-4c55-9d0c-1b2a3c4d5e6f"])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_extreme_timestamps_get_a_400_envelope(db_url: str, tmp_path: Path) -> None:
    async with stack(db_url, tmp_path) as s:
        headers = s.admin_headers()
        async with asyncio.timeout(TIMEOUT):
            for when in EXTREME_TIMES:
                for path, name in (
                    ("/api/v1/interceptions", "since"),
                    ("/api/v1/interceptions", "until"),
                    ("/api/v1/usage", "since"),
                    ("/api/v1/usage", "until"),
                ):
                    resp = await s.client.get(path, params={name: when}, headers=headers)
                    assert resp.status == 400, (path, name, when, await resp.text())
                    body = await resp.json()
                    assert [v["field"] for v in body["validations"]] == [name]
                    assert "outside years 1-9999" in body["validations"][0]["detail"]
                resp = await s.client.get(
                    "/api/v1/interceptions",
                    params={"cursor": crafted_cursor(when)},
                    headers=headers,
                )
                assert resp.status == 400, (when, await resp.text())
                assert (await resp.json())["validations"][0]["field"] == "cursor"
                resp = await s.client.post(
                    "/api/v1/users/dev/keys",
                    json={"name": "far", "expires_at": when},
                    headers=headers,
                )
                assert resp.status == 400, (when, await resp.text())
                assert (await resp.json())["validations"][0]["field"] == "expires_at"
            # The extremes that do fit are still accepted.
            resp = await s.client.get(
                "/api/v1/interceptions",
                params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
                headers=headers,
            )
            assert resp.status == 200, await resp.text()
            resp = await s.client.post(
                "/api/v1/users/dev/keys",
                json={"name": "far", "expires_at": "9999-12-31T23:59:59+23:59"},
                headers=headers,
            )
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["expires_at"].startswith("9999-12-31T00:00:59")


ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/providers", None),
    ("POST", "/api/v1/providers", {"type": "openai", "name": "n2", "base_url": "http://x/v1"}),
    ("GET", "/api/v1/providers/p", None),
    ("PATCH", "/api/v1/providers/p", {"enabled": False}),
    ("DELETE", "/api/v1/providers/p", None),
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/users", {"username": "eve", "role": "member"}),
    ("GET", "/api/v1/users/dev", None),
    ("PATCH", "/api/v1/users/dev", {"email": "dev@example.com"}),
    ("GET", "/api/v1/users/dev/keys", None),
    ("POST", "/api/v1/users/dev/keys", {"name": "k2"}),
    ("DELETE", "/api/v1/users/dev/keys/3f1e7b1c-8d7e-4c55-9d0c-1b2a3c4d5e6f", None),
    ("GET", "/api/v1/me", None),
    ("GET", "/api/v1/me/keys", None),
    ("GET", "/api/v1/interceptions", None),
    ("GET", "/api/v1/usage", None),
]


async def test_database_outage_gives_503_envelopes_on_the_admin_api(
    pg_url: str, tmp_path: Path
) -> None:
    async with stack(pg_url, tmp_path) as s:
        await s.add_provider("p", "openai")
        async with asyncio.timeout(TIMEOUT):
            # A second admin key, never used before the outage: its lookup hits the database.
            resp = await s.client.post(
                "/api/v1/users/admin/keys", json={"name": "spare"}, headers=s.admin_headers()
            )
            assert resp.status == 201, await resp.text()
            fresh = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            resp = await s.client.get("/api/v1/me", headers=s.admin_headers())
            assert resp.status == 200  # the first admin key is now cached
        async with pg_outage(pg_url):
            for headers in (s.admin_headers(), fresh):
                for method, path, body in ADMIN_CALLS:
                    async with asyncio.timeout(TIMEOUT):
                        resp = await s.client.request(method, path, json=body, headers=headers)
                        text = await resp.text()
                    assert resp.status == 503, (method, path, resp.status, text)
                    assert resp.content_type == "application/json", (method, path, text)
                    data = orjson.loads(text)
                    assert data["message"] == "Database unavailable.", (method, path, data)
                    assert resp.headers.get("Retry-After"), (method, path)
        # Back to normal once the database is.
        async with asyncio.timeout(TIMEOUT):
            while True:
                resp = await s.client.get("/api/v1/users", headers=s.admin_headers())
                if resp.status == 200:
                    break
                assert resp.status == 503, await resp.text()
                await asyncio.sleep(0.05)  # polling recovery, bounded by the timeout


# --------------------------------------------------------------------------- 14. metric labels


async def metrics_text(s: Stack) -> bytes:
    """The ``/metrics`` page."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.get("/metrics")
        assert resp.status == 200
        return await resp.read()


async def test_two_thousand_model_names_grow_metrics_by_less_than_200kb(
    sqlite_url: str, tmp_path: Path
) -> None:
    breaker = {"circuit_breaker": {"enabled": True}}
    async with stack(sqlite_url, tmp_path) as s, aiohttp.ClientSession() as session:
        await s.add_provider("anthropic", "anthropic", settings=breaker)
        url = f"{s.base}/anthropic/v1/messages"
        headers = {"x-api-key": s.user_token}

        async def one(model: str, stream: bool) -> None:
            body = {
                "model": model,
                "max_tokens": 5,
                "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            }
            async with session.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        async with asyncio.timeout(TIMEOUT):
            await one("claude-sonnet-4-5-20250929", False)
        before = await metrics_text(s)
        limit = asyncio.Semaphore(16)

        async def bounded(n: int) -> None:
            async with limit:
                await one(f"claude-sonnet-4-5-20250929-client-chosen-{n:05d}", n % 2 == 0)

        async with asyncio.timeout(6 * TIMEOUT):
            await asyncio.gather(*(bounded(n) for n in range(2000)))
        after = await metrics_text(s)
        growth = len(after) - len(before)
        print(f"/metrics grew by {growth / 1000:.1f} kB for 2,000 model names")
        assert growth < 200_000, f"/metrics grew by {growth} bytes"
        # The first models keep their names, every later one counts as "other".
        other = b'aibridge_tokens_total{model="other",provider="anthropic",type="input"} '
        assert other in after
        assert b"client-chosen-00000" in after
        assert b"client-chosen-01999" not in after
        assert b'aibridge_circuit_breaker_state{endpoint="/v1/messages",model="other"' not in after


async def test_client_chosen_http_methods_share_one_passthrough_series(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s, aiohttp.ClientSession() as session:
        await s.add_provider("anthropic", "anthropic")
        headers = {"x-api-key": s.user_token}
        # Methods HTTP parsers accept besides the standard ones (aiohttp's pure-Python
        # parser takes any token at all).
        exotic = ["PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH"]
        exotic += ["REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "NOTIFY", "SUBSCRIBE", "PURGE"]
        async with asyncio.timeout(TIMEOUT):
            for method in ["GET", *exotic]:
                async with session.request(
                    method, f"{s.base}/anthropic/v1/models", headers=headers
                ) as resp:
                    await resp.read()
        text = (await metrics_text(s)).decode()
        series = [
            line for line in text.splitlines() if line.startswith("aibridge_passthrough_total{")
        ]
        assert sorted(series) == [
            'aibridge_passthrough_total{method="GET",provider="anthropic"} 1.0',
            'aibridge_passthrough_total{method="other",provider="anthropic"} 15.0',
        ]


# --------------------------------------------------------------------------- 13. slow clients


class RawClient:
    """One raw TCP connection to the gateway, for clients no HTTP library would mimic."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        # Taken before connecting: the server cannot have accepted the connection earlier,
        # so age() never understates how long the server has held it (on a loaded machine
        # this test's coroutine may resume well after the handshake).
        self.opened = opened
        self.closed_at: float | None = None  # age() when the server closed it

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        """Open a connection to 127.0.0.1:``port``."""
        opened = asyncio.get_running_loop().time()
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, opened)

    async def send(self, data: bytes) -> bool:
        """Send ``data``; False when the server has closed the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def closed_within(self, seconds: float) -> bytes | None:
        """Everything the server sent, if it closes the connection within ``seconds``;
        None if it is still open by then."""
        received = b""
        try:
            async with asyncio.timeout(seconds):
                while chunk := await self.reader.read(65536):
                    received += chunk
        except TimeoutError:
            return None
        except ConnectionError:
            pass
        self.closed_at = self.age()
        return received

    def age(self) -> float:
        """Seconds since the connection opened."""
        return asyncio.get_running_loop().time() - self.opened

    def close(self) -> None:
        """Drop the connection."""
        self.writer.close()


async def trickle_headers(client: RawClient, pace: float, give_up: float) -> float:
    """Slowloris: a request line, then one more header line every ``pace`` seconds, never
    the blank line that ends the headers. Returns the connection's age when the server
    closed it (or ``give_up`` seconds have passed)."""
    sent = await client.send(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
    while sent and client.age() < give_up:
        if await client.closed_within(pace) is not None:
            break
        sent = await client.send(b"X-Padding: slowly\r\n")
    return client.age()


async def test_slowloris_connections_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    """150 connections trickling headers into ``aibridge serve --workers 2``: every one is
    closed once the header timeout has passed, however often it sends a byte."""
    header_timeout = 1.0
    async with (
        serve_process(tmp_path, workers=2, AIBRIDGE_HEADER_READ_TIMEOUT=str(header_timeout)) as (
            gw,
            _,
        ),
        aiohttp.ClientSession() as session,
    ):
        clients = [await RawClient.connect(gw.port) for _ in range(150)]
        try:
            ages = await asyncio.gather(
                *(trickle_headers(c, 0.2, give_up=header_timeout + 5) for c in clients)
            )
        finally:
            for client in clients:
                client.close()
        print(f"slowloris connections closed after {min(ages):.2f}-{max(ages):.2f} s")
        assert max(ages) < header_timeout + 2.0, f"a connection stayed open {max(ages):.1f} s"
        assert min(ages) >= header_timeout * 0.9, "closed before the deadline"
        async with asyncio.timeout(TIMEOUT), session.get(f"{gw.url}/healthz") as resp:
            assert resp.status == 200  # the gateway still serves


SLOW = {"header_read_timeout": 0.6, "body_read_timeout": 0.6, "keepalive_timeout": 2.0}


def request_head(s: Stack, length: int) -> bytes:
    """Headers of a Chat Completions request with a body of ``length`` bytes."""
    return (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        b"Authorization: Bearer " + s.user_token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n"
    )


async def test_a_stalled_request_body_is_closed_after_the_body_timeout(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path, settings_overrides=SLOW) as s:
        await s.add_provider("openai", "openai")
        port = s.client.port
        assert port is not None
        client = await RawClient.connect(port)
        try:
            assert await client.send(request_head(s, 100) + b'{"model":')
            assert await client.closed_within(SLOW["body_read_timeout"] + 2.0) == b""
            assert client.age() >= SLOW["body_read_timeout"] * 0.9
        finally:
            client.close()


async def test_a_slow_but_steady_body_and_a_slow_stream_are_not_cut(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The body timeout is an idle timeout, and a long response is not a slow client."""
    async with stack(sqlite_url, tmp_path, settings_overrides=SLOW) as s:
        await s.add_provider("openai", "openai")
        port = s.client.port
        assert port is not None
        body = orjson.dumps(chat_request(stream=True))
        s.fake.enqueue(Scenario.slow(delay=0.3))  # ~2 s of streaming, 0.3 s between events
        client = await RawClient.connect(port)
        try:
            assert await client.send(request_head(s, len(body)))
            for i in range(0, len(body), len(body) // 6 + 1):  # ~7 pieces, 0.3 s apart
                assert await client.closed_within(0.3) is None  # no answer, no close yet
                assert await client.send(body[i : i + len(body) // 6 + 1])
            assert client.age() > 2 * SLOW["body_read_timeout"]
            started = client.age()
            async with asyncio.timeout(TIMEOUT):
                head = await client.reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                rest = await client.reader.readuntil(b"data: [DONE]")
            assert client.age() - started > 2 * SLOW["body_read_timeout"]
            assert b"chat.completion.chunk" in rest
        finally:
            client.close()


async def test_idle_and_half_sent_keepalive_connections_are_closed(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path, settings_overrides=SLOW) as s:
        port = s.client.port
        assert port is not None
        healthz = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
        # Idle after a complete request: the keep-alive timeout.
        idle = await RawClient.connect(port)
        # Half of the next request's headers after a complete one: the header timeout.
        half = await RawClient.connect(port)
        try:
            for client in (idle, half):
                assert await client.send(healthz)
                async with asyncio.timeout(TIMEOUT):
                    head = await client.reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200")
                    assert await client.reader.readexactly(15) == b'{"status":"ok"}'
            idle.opened = half.opened = asyncio.get_running_loop().time()
            assert await half.send(b"GET /healthz HTTP/1.1\r\nHost: g")
            results = await asyncio.gather(
                idle.closed_within(SLOW["keepalive_timeout"] + 2.0),
                half.closed_within(SLOW["header_read_timeout"] + 2.0),
            )
            assert results == [b"", b""], results
            # The half-sent request is cut by the header timeout, well before the idle one.
            assert half.closed_at is not None and idle.closed_at is not None
            assert half.closed_at < SLOW["keepalive_timeout"] - 0.4 < idle.closed_at
        finally:
            idle.close()
            half.close()


# ------------------------------------------------------------- 16. aiohttp's own 400s in the log

MALFORMED = [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n",  # request line too long
    b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",  # header too long
    b"GET /a\x01b HTTP/1.1\r\nHost: gw\r\n\r\n",  # control character in the path
    b"GET http://[::1 HTTP/1.1\r\nHost: gw\r\n\r\n",  # malformed absolute URL
    b"GET / HTTP/1.1\r\nHost: gw\r\nBad Header: y\r\n\r\n",  # invalid header name
]


async def test_malformed_requests_are_logged_once_per_interval_with_a_count(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    throttle = throttle_bad_request_logs(60.0, clock)

    async def reject(raw: bytes) -> None:
        client = await RawClient.connect(port)
        try:
            assert await client.send(raw)
            answer = await client.closed_within(TIMEOUT)
            assert answer is not None and answer.startswith(b"HTTP/1.0 400"), answer
        finally:
            client.close()

    def server_records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "aiohttp.server"]

    try:
        async with stack(sqlite_url, tmp_path) as s:
            port = s.client.port
            assert port is not None
            for raw in MALFORMED * 6:
                await reject(raw)
            [first] = server_records()
            assert first.levelno == logging.WARNING
            assert first.exc_info is None and first.exc_text is None
            message = first.getMessage()
            assert "rejected a malformed HTTP request from 127.0.0.1: LineTooLong" in message
            assert len(message) < 300  # not 8 KiB of the client's bytes
            assert first.__dict__["suppressed"] == 0

            clock.advance(61)
            await reject(MALFORMED[2])
            first_again, second = server_records()
            assert first_again is first
            assert "InvalidURLError" in second.getMessage()
            assert second.__dict__["suppressed"] == len(MALFORMED) * 6 - 1
    finally:
        logging.getLogger("aiohttp.server").removeFilter(throttle)
