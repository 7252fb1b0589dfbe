"""End to end: data-plane edges shared by every provider.

Gateway + a tiny recording echo upstream (below) or FakeLLM + a real SQLite database.
Covers the upstream URL (base path kept, query preserved byte for byte), stable request
encoding, the process environment not leaking upstream, request/response header hygiene,
the Prometheus series on ``/metrics`` and upstreams that compress a bridged answer
although the gateway asked for ``identity``.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict, MultiDict
from prometheus_client.parser import text_string_to_metric_families

from aibridge.fakellm import Scenario, Usage
from aibridge.testing.stack import TIMEOUT, Stack, stack

ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
CHAT_MODEL = "gpt-4o-mini"
UPSTREAM_KEY = "sk-upstream-edge-key-0001"
ECHO_USAGE_IN = 37
ECHO_USAGE_OUT = 11


# --------------------------------------------------------------------------- echo upstream


@dataclass
class Seen:
    """One request as the echo upstream received it."""

    method: str
    path: str
    raw_query: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class EchoUpstream:
    """A minimal upstream that records every request and answers a valid minimal
    Anthropic Messages / OpenAI Chat body or SSE stream (by path suffix), or a models list.

    ``gzip_bridged`` compresses generation answers whatever the request's Accept-Encoding;
    models answers are compressed only when the request accepts gzip (as real servers do).
    ``response_headers`` are added to every answer.
    """

    gzip_bridged: bool = False
    response_headers: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the request, then answer by path."""
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.rel_url.raw_query_string,
                MultiDict(request.query),
                CIMultiDict(request.headers),
                body,
            )
        )
        parsed: Any = orjson.loads(body) if body else {}
        if request.path.endswith("/messages"):
            if parsed.get("stream"):
                return await self._stream(request, anthropic_events())
            return self._respond(orjson.dumps(anthropic_message()), self.gzip_bridged)
        if request.path.endswith("/chat/completions"):
            if parsed.get("stream"):
                include = bool((parsed.get("stream_options") or {}).get("include_usage"))
                return await self._stream(request, chat_events(include))
            return self._respond(orjson.dumps(chat_completion()), self.gzip_bridged)
        accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        return self._respond(orjson.dumps(models_list()), accepts_gzip)

    def _respond(self, payload: bytes, compress: bool) -> web.Response:
        headers = dict(self.response_headers)
        if compress:
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = "application/json"
        return web.Response(body=payload, headers=headers)

    async def _stream(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", **self.response_headers}
        compressor = zlib.compressobj(wbits=31) if self.gzip_bridged else None
        if compressor is not None:
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        for event in events:
            if compressor is None:
                await resp.write(event)
            else:
                await resp.write(compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH))
        if compressor is not None:
            await resp.write(compressor.flush())
        await resp.write_eof()
        return resp

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[EchoUpstream]:
        """Run on an ephemeral loopback port; :attr:`url` is ``http://127.0.0.1:PORT``."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            yield self
        finally:
            await runner.cleanup()


def sse(event: str | None, data: Any) -> bytes:
    """One SSE event (``data`` JSON-encoded unless it is already bytes)."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def anthropic_message() -> dict[str, Any]:
    """A minimal blocking Messages answer."""
    return {
        "id": "msg_echo_0001",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": ECHO_USAGE_IN, "output_tokens": ECHO_USAGE_OUT},
    }


def anthropic_events() -> list[bytes]:
    """A minimal Messages stream."""
    start = anthropic_message() | {"content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": ECHO_USAGE_IN, "output_tokens": 1}
    return [
        sse("message_start", {"type": "message_start", "message": start}),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hello"},
            },
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": ECHO_USAGE_OUT},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


def chat_completion() -> dict[str, Any]:
    """A minimal blocking Chat Completions answer."""
    return {
        "id": "chatcmpl-echo0001",
        "object": "chat.completion",
        "created": 1700000000,
        "model": CHAT_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": ECHO_USAGE_IN,
            "completion_tokens": ECHO_USAGE_OUT,
            "total_tokens": ECHO_USAGE_IN + ECHO_USAGE_OUT,
        },
    }


def chat_events(include_usage: bool) -> list[bytes]:
    """A minimal Chat Completions stream (with the usage chunk when it was asked for)."""
    base = {
        "id": "chatcmpl-echo0001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": CHAT_MODEL,
    }
    events = [
        sse(
            None,
            base
            | {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": "hello"},
                        "finish_reason": None,
                    }
                ]
            },
        ),
        sse(None, base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ]
    if include_usage:
        usage = chat_completion()["usage"]
        events.append(sse(None, base | {"choices": [], "usage": usage}))
    return [*events, sse(None, b"[DONE]")]


def models_list() -> dict[str, Any]:
    """What the echo answers on any non-generation path."""
    return {"object": "list", "data": [{"id": "model-a", "object": "model"}]}


@asynccontextmanager
async def echo_stack(
    sqlite_url: str, tmp_path: Path, echo: EchoUpstream | None = None
) -> AsyncIterator[tuple[Stack, EchoUpstream]]:
    """A gateway stack plus a running echo upstream."""
    upstream = echo or EchoUpstream()
    async with upstream.serve(), stack(sqlite_url, tmp_path) as s:
        yield s, upstream


def messages_body(stream: bool = False) -> bytes:
    """A small Messages request body."""
    return orjson.dumps(
        {
            "model": ANTHROPIC_MODEL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
    )


def chat_body(stream: bool = False) -> bytes:
    """A small Chat Completions request body (no stream_options)."""
    return orjson.dumps(
        {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    )


async def send(
    s: Stack,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | CIMultiDict[str] | None = None,
) -> tuple[aiohttp.ClientResponse, bytes]:
    """A raw request to the gateway with the member's key (unless ``headers`` has one);
    the answer's bytes exactly as sent (no client-side decompression)."""
    hdrs: CIMultiDict[str] = CIMultiDict(headers or {})
    if "Authorization" not in hdrs and "X-Api-Key" not in hdrs:
        hdrs["Authorization"] = f"Bearer {s.user_token}"
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    url = f"{s.base}{path}"
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(method, url, data=body, headers=hdrs) as resp,
    ):
        raw = await resp.read()
    return resp, raw


def decoded(resp: aiohttp.ClientResponse, raw: bytes) -> bytes:
    """The body a client gets after honouring the relayed ``Content-Encoding``."""
    encoding = resp.headers.get("Content-Encoding", "identity").lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    assert encoding == "identity", encoding
    return raw


# --------------------------------------------------------------------------- upstream URL


@pytest.mark.parametrize(
    ("ptype", "base_suffix", "bridged", "passthrough"),
    [
        ("anthropic", "/api", "/api/v1/messages", "/api/v1/models"),
        ("anthropic", "/api/", "/api/v1/messages", "/api/v1/models"),
        ("anthropic", "", "/v1/messages", "/v1/models"),
        # The reference does not de-duplicate a base that already ends in /v1.
        ("anthropic", "/v1", "/v1/v1/messages", "/v1/v1/models"),
        ("openai", "/api", "/api/chat/completions", "/api/models"),
        ("openai", "/api/", "/api/chat/completions", "/api/models"),
        ("openai", "/v1", "/v1/chat/completions", "/v1/models"),
    ],
)
async def test_the_upstream_url_keeps_the_providers_base_path(
    ptype: str,
    base_suffix: str,
    bridged: str,
    passthrough: str,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """Upstream URL = base URL joined with the route suffix, the base path kept (reference
    TestSimple / TestFallthrough); the answers reach the client."""
    async with echo_stack(sqlite_url, tmp_path) as (s, echo):
        await s.add_provider("edge", ptype, keys=[UPSTREAM_KEY], base_url=echo.url + base_suffix)
        prefix = "/edge/v1"
        if ptype == "anthropic":
            gen_path, gen_body, expected = (
                f"{prefix}/messages",
                messages_body(),
                anthropic_message(),
            )
        else:
            gen_path, gen_body, expected = (
                f"{prefix}/chat/completions",
                chat_body(),
                chat_completion(),
            )
        resp, raw = await send(s, "POST", gen_path, gen_body)
        assert resp.status == 200, raw
        assert orjson.loads(decoded(resp, raw)) == expected
        resp, raw = await send(s, "GET", f"{prefix}/models")
        assert resp.status == 200, raw
        assert orjson.loads(decoded(resp, raw)) == models_list()
        assert [(r.method, r.path) for r in echo.seen] == [
            ("POST", bridged),
            ("GET", passthrough),
        ]
        credential = (
            echo.seen[1].headers.get("x-api-key")
            if ptype == "anthropic"
            else echo.seen[1].headers.get("Authorization")
        )
        assert credential == (UPSTREAM_KEY if ptype == "anthropic" else f"Bearer {UPSTREAM_KEY}")


# Repeated keys, an encoded "&", "+" (space) next to an encoded "+", UTF-8, empty values and
# a bare key: every one must reach the upstream with the same meaning.
TRICKY_QUERY = "q=a%26b&tag=x&tag=y&s=%E2%9C%93+z%2Bw&empty=&flag&eq=a%3Db"
TRICKY_PARSED = [
    ("q", "a&b"),
    ("tag", "x"),
    ("tag", "y"),
    ("s", "✓ z+w"),
    ("empty", ""),
    ("flag", ""),
    ("eq", "a=b"),
]


@pytest.mark.parametrize("ptype", ["anthropic", "openai"])
async def test_the_clients_query_reaches_the_upstream_unchanged(
    ptype: str, sqlite_url: str, tmp_path: Path
) -> None:
    """The client's query reaches the upstream unchanged on passthrough and bridged routes:
    repeated keys kept in order and percent-encoding not decoded (nor double-encoded)."""
    async with echo_stack(sqlite_url, tmp_path) as (s, echo):
        await s.add_provider("edge", ptype, keys=[UPSTREAM_KEY], base_url=echo.url + "/api")
        gen = "/edge/v1/messages" if ptype == "anthropic" else "/edge/v1/chat/completions"
        body = messages_body() if ptype == "anthropic" else chat_body()
        resp, raw = await send(s, "GET", f"/edge/v1/models?{TRICKY_QUERY}")
        assert resp.status == 200, raw
        resp, raw = await send(s, "GET", f"/edge/v1/models/model-a?{TRICKY_QUERY}")
        assert resp.status == 200, raw
        resp, raw = await send(s, "POST", f"{gen}?beta=true&{TRICKY_QUERY}", body)
        assert resp.status == 200, raw
        assert len(echo.seen) == 3
        for seen in echo.seen[:2]:
            assert list(seen.query.items()) == TRICKY_PARSED
            assert seen.raw_query == TRICKY_QUERY
        expected_paths = (
            ["/api/v1/models", "/api/v1/models/model-a", "/api/v1/messages"]
            if ptype == "anthropic"
            else ["/api/models", "/api/models/model-a", "/api/chat/completions"]
        )
        assert [seen.path for seen in echo.seen] == expected_paths
        assert list(echo.seen[2].query.items()) == [("beta", "true"), *TRICKY_PARSED]


# --------------------------------------------------------------------------- stable encoding


async def test_identical_requests_give_byte_identical_upstream_bodies(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Ten identical client requests give ten byte-identical upstream bodies (reference
    TestStableRequestEncoding): Messages streaming is relayed as is, Chat streaming gets
    ``include_usage`` spliced in, the same way every time."""
    messages = (
        b'{"model": "' + ANTHROPIC_MODEL.encode() + b'", "max_tokens": 99, "stream": true,\n'
        b' "tools": [{"name": "b_tool", "input_schema": {"type": "object", "z": 1, "a": 2}},'
        b' {"name": "a_tool", "input_schema": {"type": "object"}}],'
        b' "messages": [{"role": "user", "content": "caf\\u00e9"}], "metadata": {"k": 1.50}}'
    )
    chat = (
        b'{"model": "gpt-4o", "stream": true, "temperature": 0.70,\n'
        b' "tools": [{"type": "function", "function": {"name": "b", "parameters": {"z": 1}}},'
        b' {"type": "function", "function": {"name": "a"}}],'
        b' "messages": [{"role": "user", "content": "hi"}], "zz_last": null}'
    )
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("claude", "anthropic", keys=[UPSTREAM_KEY])
        await s.add_provider("oai", "openai", keys=[UPSTREAM_KEY])
        results = await asyncio.gather(
            *(send(s, "POST", "/claude/v1/messages", messages) for _ in range(10)),
            *(send(s, "POST", "/oai/v1/chat/completions", chat) for _ in range(10)),
        )
        for resp, raw in results:
            assert resp.status == 200, raw
        by_path: dict[str, list[bytes]] = {}
        for rec in s.fake.requests:
            by_path.setdefault(rec.path, []).append(rec.body)
        assert sorted(by_path) == ["/v1/chat/completions", "/v1/messages"]
        assert len(by_path["/v1/messages"]) == 10
        assert len(by_path["/v1/chat/completions"]) == 10
        assert set(by_path["/v1/messages"]) == {messages}
        chat_bodies = set(by_path["/v1/chat/completions"])
        assert len(chat_bodies) == 1
        (spliced,) = chat_bodies
        assert spliced != chat
        assert orjson.loads(spliced) == orjson.loads(chat) | {
            "stream_options": {"include_usage": True}
        }


# --------------------------------------------------------------------------- environment


async def test_provider_variables_in_the_environment_never_reach_the_upstream(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path
) -> None:
    """Provider variables in the gateway's environment never reach the upstream
    (reference TestEnvironmentDoNotLeak): no header of any upstream request carries their
    values, and SDK-style headers the client did not send are not invented."""
    secrets = {
        "OPENAI_ORG_ID": "org-env-leak-canary-1",
        "ANTHROPIC_AUTH_TOKEN": "ant-auth-env-leak-canary-2",
        "OPENAI_API_KEY": "sk-openai-env-leak-canary-3",
        "ANTHROPIC_API_KEY": "sk-ant-env-leak-canary-4",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    async with echo_stack(sqlite_url, tmp_path) as (s, echo):
        await s.add_provider("claude", "anthropic", keys=[UPSTREAM_KEY], base_url=echo.url)
        await s.add_provider("oai", "openai", keys=[UPSTREAM_KEY], base_url=echo.url + "/v1")
        calls = [
            ("POST", "/claude/v1/messages", messages_body()),
            ("POST", "/claude/v1/messages", messages_body(stream=True)),
            ("GET", "/claude/v1/models", None),
            ("POST", "/oai/v1/chat/completions", chat_body()),
            ("POST", "/oai/v1/chat/completions", chat_body(stream=True)),
            ("GET", "/oai/v1/models", None),
        ]
        for method, path, body in calls:
            resp, raw = await send(s, method, path, body)
            assert resp.status == 200, raw
        assert len(echo.seen) == len(calls)
        for seen in echo.seen:
            for name, value in seen.headers.items():
                for secret in secrets.values():
                    assert secret not in value, (seen.path, name)
            assert "OpenAI-Organization" not in seen.headers
            assert "anthropic-version" not in seen.headers
            assert not any(name.lower().startswith("x-stainless") for name in seen.headers)
        # The echo logs requests in call order: three Anthropic calls, then three OpenAI.
        for seen, anthropic_call in zip(echo.seen, [True] * 3 + [False] * 3, strict=True):
            creds = [
                (k.lower(), v)
                for k, v in seen.headers.items()
                if k.lower() in ("x-api-key", "authorization")
            ]
            expected = (
                ("x-api-key", UPSTREAM_KEY)
                if anthropic_call
                else ("authorization", f"Bearer {UPSTREAM_KEY}")
            )
            assert creds == [expected], seen.path


# --------------------------------------------------------------------------- header hygiene

CLIENT_XFF = "203.0.113.7, 198.51.100.2"
HOP_RESPONSE_HEADERS = {
    "Keep-Alive": "timeout=5, max=100",
    "Proxy-Authenticate": 'Basic realm="upstream"',
    "Proxy-Connection": "keep-alive",
    # Named in Connection, so hop-by-hop too (RFC 9110 §7.6.1).
    "Connection": "keep-alive, X-Upstream-Hop",
    "X-Upstream-Hop": "hop-secret",
}
RELAYED_RESPONSE_HEADERS = {
    "request-id": "req_011EchoRequestId",
    "x-request-id": "req_echo_x_request_id",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-tokens-reset": "2025-01-01T00:00:00Z",
    "x-ratelimit-remaining-tokens": "149000",
    "x-ratelimit-limit-requests": "500",
}


def hostile_client_headers(s: Stack) -> CIMultiDict[str]:
    """Everything a client might send that must not reach the upstream, plus headers that
    must (anthropic-version/-beta, User-Agent, Content-Type, a custom one)."""
    return CIMultiDict(
        [
            ("Cookie", "session=cookie-secret-value"),
            ("X-Forwarded-For", CLIENT_XFF),
            ("X-Forwarded-Host", "forwarded-host.example"),
            ("X-Forwarded-Proto", "gopher"),
            ("Forwarded", "for=203.0.113.7;proto=https;by=client-forwarded"),
            ("Proxy-Authorization", "Basic cHJveHktdXNlcjpwcm94eS1zZWNyZXQ="),
            ("Connection", "keep-alive"),
            ("X-Api-Key", s.user_token),
            ("Authorization", f"Bearer {s.user_token}"),
            ("Accept-Encoding", "gzip"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
            ("User-Agent", "claude-cli/1.0.0 (external, cli)"),
            ("Content-Type", "application/json"),
            ("X-Custom-Client", "keep-me"),
        ]
    )


CLIENT_ONLY_VALUES = (
    "cookie-secret-value",
    "forwarded-host.example",
    "gopher",
    "client-forwarded",
    "cHJveHktdXNlcjpwcm94eS1zZWNyZXQ=",
)


def assert_response_headers_clean(resp: aiohttp.ClientResponse) -> None:
    """Request ids and rate-limit headers reach the client; hop-by-hop ones do not."""
    for name, value in RELAYED_RESPONSE_HEADERS.items():
        assert resp.headers.get(name) == value, name
    for name in ("Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "X-Upstream-Hop"):
        assert name not in resp.headers, name
    assert "X-Upstream-Hop" not in resp.headers.get("Connection", "")


@pytest.mark.parametrize("mode", ["blocking", "streaming", "passthrough"])
async def test_proxy_cookie_and_credential_headers_never_reach_the_upstream(
    mode: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Client-side proxy, cookie, forwarding and credential headers never reach the
    upstream; exactly one provider credential does; the client's protocol headers pass
    through. Passthrough sets X-Forwarded-For to the client's chain plus the client IP.
    Upstream request ids and rate limits are relayed back, hop-by-hop headers are not."""
    echo = EchoUpstream(response_headers=RELAYED_RESPONSE_HEADERS | HOP_RESPONSE_HEADERS)
    async with echo_stack(sqlite_url, tmp_path, echo) as (s, echo):
        await s.add_provider("claude", "anthropic", keys=[UPSTREAM_KEY], base_url=echo.url)
        headers = hostile_client_headers(s)
        if mode == "passthrough":
            resp, raw = await send(s, "GET", "/claude/v1/models", None, headers)
            assert resp.status == 200, raw
            assert orjson.loads(decoded(resp, raw)) == models_list()
        else:
            stream = mode == "streaming"
            resp, raw = await send(s, "POST", "/claude/v1/messages", messages_body(stream), headers)
            assert resp.status == 200, raw
            if stream:
                assert decoded(resp, raw) == b"".join(anthropic_events())
            else:
                assert orjson.loads(decoded(resp, raw)) == anthropic_message()
        assert_response_headers_clean(resp)

        (seen,) = echo.seen
        up = seen.headers
        for value in CLIENT_ONLY_VALUES:
            assert all(value not in v for v in up.values()), value
        assert all(s.user_token not in v for v in up.values())
        for name in ("Cookie", "Forwarded", "Proxy-Authorization"):
            assert name not in up, name
        assert "Authorization" not in up
        assert up.getall("x-api-key") == [UPSTREAM_KEY]
        assert "Connection" not in up
        for name in ("anthropic-version", "anthropic-beta", "User-Agent", "Content-Type"):
            assert up.getall(name) == headers.getall(name), name
        assert up["X-Custom-Client"] == "keep-me"
        if mode == "passthrough":
            assert up.getall("X-Forwarded-For") == [f"{CLIENT_XFF}, 127.0.0.1"]
            # Set by the gateway from the request it received, never the client's copies.
            assert up.getall("X-Forwarded-Host") == [f"127.0.0.1:{s.client.port}"]
            assert up.getall("X-Forwarded-Proto") == ["http"]
            # Passthrough relays bytes untouched, so the client's encoding choice stands
            # (the relayed body was checked above to decode with the relayed header).
            assert up.get("Accept-Encoding") == "gzip"
        else:
            for name in ("X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"):
                assert name not in up, name
            assert up.getall("Accept-Encoding") == ["identity"]


async def test_passthrough_joins_repeated_forwarded_for(sqlite_url: str, tmp_path: Path) -> None:
    """Several X-Forwarded-For lines form one chain; the client IP is appended once, and a
    client without the header gets just its IP and the default User-Agent."""
    async with echo_stack(sqlite_url, tmp_path) as (s, echo):
        await s.add_provider("oai", "openai", keys=[UPSTREAM_KEY], base_url=echo.url + "/v1")
        headers: CIMultiDict[str] = CIMultiDict(
            [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.2")]
        )
        resp, raw = await send(s, "GET", "/oai/v1/models", None, headers)
        assert resp.status == 200, raw
        async with (
            asyncio.timeout(TIMEOUT),
            aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session,
            session.get(
                f"{s.base}/oai/v1/models", headers={"Authorization": f"Bearer {s.user_token}"}
            ) as bare,
        ):
            assert bare.status == 200
        first, second = echo.seen
        assert first.headers.getall("X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
        assert second.headers.getall("X-Forwarded-For") == ["127.0.0.1"]
        assert second.headers.getall("User-Agent") == ["aibridge"]


# --------------------------------------------------------------------------- compression


@pytest.mark.parametrize(
    ("ptype", "stream"),
    [("anthropic", False), ("anthropic", True), ("openai", False), ("openai", True)],
)
async def test_a_gzipped_bridged_answer_is_recorded_and_decodes_for_the_client(
    ptype: str, stream: bool, sqlite_url: str, tmp_path: Path
) -> None:
    """An upstream that gzips a bridged answer although the gateway asked for identity:
    usage is still recorded and the client gets a body that decodes with the relayed
    headers (a decompressed body must not carry ``Content-Encoding: gzip``)."""
    async with echo_stack(sqlite_url, tmp_path, EchoUpstream(gzip_bridged=True)) as (s, echo):
        await s.add_provider("edge", ptype, keys=[UPSTREAM_KEY], base_url=echo.url + "/v1")
        if ptype == "anthropic":
            path, body = "/edge/v1/messages", messages_body(stream)
            expected = b"".join(anthropic_events()) if stream else orjson.dumps(anthropic_message())
        else:
            path, body = "/edge/v1/chat/completions", chat_body(stream)
            # The spliced usage chunk is hidden from a client that did not ask for it.
            expected = b"".join(chat_events(False)) if stream else orjson.dumps(chat_completion())
        resp, raw = await send(s, "POST", path, body, {"Accept-Encoding": "gzip"})
        assert resp.status == 200, raw
        assert echo.seen[0].headers.getall("Accept-Encoding") == ["identity"]
        client_body = decoded(resp, raw)
        if stream:
            assert client_body == expected
        else:
            assert orjson.loads(client_body) == orjson.loads(expected)

        rec = await s.only_recording()
        assert rec.interception.ended_at is not None
        assert rec.interception.error_type is None
        assert [(t.input_tokens, t.output_tokens) for t in rec.token_usages] == [
            (ECHO_USAGE_IN, ECHO_USAGE_OUT)
        ]


async def test_compressed_passthrough_answer_is_relayed_consistently(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Passthrough relays a gzip answer as is: the bytes stay compressed and the header
    says so, so the client decodes the upstream's body."""
    async with echo_stack(sqlite_url, tmp_path) as (s, echo):
        await s.add_provider("claude", "anthropic", keys=[UPSTREAM_KEY], base_url=echo.url)
        resp, raw = await send(s, "GET", "/claude/v1/models", None, {"Accept-Encoding": "gzip"})
        assert resp.status == 200, raw
        assert resp.headers.get("Content-Encoding") == "gzip"
        assert orjson.loads(gzip.decompress(raw)) == models_list()
        assert echo.seen[0].headers.get("Accept-Encoding") == "gzip"


# --------------------------------------------------------------------------- metrics


async def scrape(s: Stack) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` as {sample name: [(labels, value)]}."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.get("/metrics")
        assert resp.status == 200
        text = await resp.text()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None if absent)."""
    found = [v for lab, v in metrics.get(name, []) if labels.items() <= lab.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


async def test_metrics_count_in_flight_outcomes_passthrough_and_tokens(
    sqlite_url: str, tmp_path: Path
) -> None:
    """``/metrics``: in-flight gauge 1 during a stream and 0 after; interceptions by
    outcome; passthrough by method; tokens per type equal the scenario's usage; provider
    info with status; recorder and key-pool series."""
    release = asyncio.Event()
    usage = Usage(input_tokens=41, output_tokens=17, cache_read_tokens=300, cache_write_tokens=50)
    stalled = Scenario.stall(release=release, usage=usage)
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("claude", "anthropic", keys=[UPSTREAM_KEY])
        await s.add_provider("off", "openai", keys=[UPSTREAM_KEY], enabled=False)
        before = await scrape(s)
        assert value(before, "aibridge_interceptions_inflight", provider="claude") in (None, 0)

        s.fake.enqueue(stalled, Scenario.http_error(500))
        task = asyncio.create_task(
            send(s, "POST", "/claude/v1/messages", messages_body(stream=True))
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                await stalled.stalled.wait()
            during = await scrape(s)
            assert (
                value(during, "aibridge_interceptions_inflight", provider="claude", api="messages")
                == 1
            )
        finally:
            release.set()
        async with asyncio.timeout(TIMEOUT):
            resp, raw = await task
        assert resp.status == 200 and b"message_stop" in raw

        resp, raw = await send(s, "POST", "/claude/v1/messages", messages_body())
        assert resp.status == 500, raw
        resp, raw = await send(s, "GET", "/claude/v1/models")
        assert resp.status == 200, raw
        await s.flush_records()

        after = await scrape(s)
        labels = {"provider": "claude", "api": "messages"}
        assert value(after, "aibridge_interceptions_inflight", **labels) == 0
        total = "aibridge_interceptions_total"
        assert value(after, total, outcome="completed", **labels) == 1
        assert value(after, total, outcome="server_error", **labels) == 1
        assert sum(v for _, v in after[total]) == 2
        assert value(after, "aibridge_passthrough_total", provider="claude", method="GET") == 1
        assert value(after, "aibridge_passthrough_total", provider="claude", method="POST") is None
        tokens = {
            lab["type"]: v
            for lab, v in after["aibridge_tokens_total"]
            if lab["provider"] == "claude"
        }
        assert tokens == {"input": 41, "output": 17, "cache_read": 300, "cache_write": 50}
        info = {
            (lab["provider_name"], lab["provider_type"], lab["status"]): v
            for lab, v in after["aibridge_provider_info"]
        }
        assert info == {("claude", "anthropic", "enabled"): 1, ("off", "openai", "disabled"): 1}
        assert value(after, "aibridge_interception_duration_seconds_count", **labels) == 2

        written = {lab["kind"]: v for lab, v in after["aibridge_recorder_records_written_total"]}
        assert written.get("interception_end", 0) == 2, written
        assert written.get("token_usage", 0) == 1, written
        assert value(after, "aibridge_recorder_queue_depth") == 0
        for family in (
            "aibridge_key_pool_state_transitions",
            "aibridge_key_pool_exhaustions",
            "aibridge_key_pool_failover_attempts",
        ):
            assert family in after, family
        assert value(after, "aibridge_key_pool_state", provider="claude", state="valid") == 1
        assert value(after, "aibridge_key_pool_state", provider="claude", state="temporary") == 0
        assert value(after, "aibridge_key_pool_state", provider="off") is None
