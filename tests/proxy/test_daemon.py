"""The listener: authentication, allowed ports, blind tunnels and their egress check, the
CA endpoint, keep-alive on a MITM tunnel."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aibridge.proxy.daemon import ProxyOptions
from aibridge.proxy.mitm import Limits
from aibridge.proxy.tunnel import UpstreamProxy, parse_cidrs, pipe
from aibridge.testing.proxy import (
    ProxyStack,
    basic,
    client_ctx,
    connect,
    proxy_for,
    read_response,
    tls_request,
)
from aibridge.testing.stack import TIMEOUT


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that echoes every byte; yields its port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _add_openai(ps: ProxyStack) -> None:
    await ps.s.add_provider("openai", "openai", base_url=ps.up.url() + "/v1")
    async with asyncio.timeout(TIMEOUT):
        await ps.proxy.routing.wait_for(lambda r: r.lookup("localhost") is not None)


async def test_connect_to_a_provider_host_without_credentials_gets_407_with_a_challenge(
    ps: ProxyStack,
) -> None:
    await _add_openai(ps)
    target = f"localhost:{ps.up.port}"
    async with connect(ps.proxy.port, target) as (resp, _r, _w):
        assert resp.status == 407
        assert resp.headers["proxy-authenticate"].startswith("Basic realm=")
        assert b"HTTPS_PROXY" in resp.body
    async with connect(ps.proxy.port, target, auth=basic("aib-0000-not-a-real-key")) as (
        resp,
        _r,
        _w,
    ):
        assert resp.status == 407
    async with connect(ps.proxy.port, target, auth="Bearer " + ps.s.user_token) as (resp, _r, _w):
        assert resp.status == 407
    assert ps.mitm_requests("openai") == 0


async def test_connect_to_a_port_not_allowed_is_refused(ps: ProxyStack) -> None:
    await _add_openai(ps)
    for target in ("localhost:22", "example.com:25"):
        async with connect(ps.proxy.port, target, auth=basic(ps.s.user_token)) as (resp, _r, _w):
            assert resp.status == 403
            assert b"is not allowed" in resp.body


async def test_a_tunnel_to_a_private_address_is_refused_unless_allow_listed(
    ps: ProxyStack, tmp_path: Path
) -> None:
    payload = os.urandom(200_000) + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    async with echo_server() as port:
        # The stack's proxy allows only 443 and the upstream's port; this one allows the
        # echo server's port but refuses private destinations.
        refusing = ProxyOptions(allowed_ports=frozenset({port}))
        async with (
            proxy_for(ps.s, ps.ca, tmp_path, refusing) as proxy,
            connect(proxy.port, f"127.0.0.1:{port}") as (resp, _r, _w),
        ):
            assert resp.status == 403
            assert resp.body == b"Forbidden"
        allowing = ProxyOptions(
            allowed_ports=frozenset({port}), allowed_private=parse_cidrs(["127.0.0.0/8"])
        )
        async with (
            proxy_for(ps.s, ps.ca, tmp_path, allowing) as proxy,
            connect(proxy.port, f"127.0.0.1:{port}") as (resp, reader, writer),
        ):
            # No credentials needed for a tunnel; bytes come back exactly as sent.
            assert resp.status == 200
            writer.write(payload)
            await writer.drain()
            async with asyncio.timeout(TIMEOUT):
                echoed = await reader.readexactly(len(payload))
            assert echoed == payload
            sessions = proxy.metrics.registry.get_sample_value(
                "aibridge_proxy_connect_sessions_total", {"type": "tunneled"}
            )
            assert sessions == 1


async def test_a_tunnel_to_a_closed_port_is_a_502(ps: ProxyStack, tmp_path: Path) -> None:
    async with echo_server() as port:
        pass  # closed again: nothing listens there any more
    options = ProxyOptions(
        allowed_ports=frozenset({port}), allowed_private=parse_cidrs(["127.0.0.1/32"])
    )
    async with (
        proxy_for(ps.s, ps.ca, tmp_path, options) as proxy,
        connect(proxy.port, f"127.0.0.1:{port}") as (resp, _r, _w),
    ):
        assert resp.status == 502


async def test_the_ca_certificate_is_served_and_never_the_key(ps: ProxyStack) -> None:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", ps.proxy.port)
        writer.write(b"GET /ca-cert.pem HTTP/1.1\r\nHost: proxy\r\n\r\n")
        resp = await read_response(reader)
        writer.close()
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/x-pem-file"
    assert resp.body == ps.ca.cert_pem()
    assert b"PRIVATE KEY" not in resp.body


async def test_keep_alive_requests_on_one_tunnel_reach_the_gateway_as_the_provider(
    ps: ProxyStack,
) -> None:
    await _add_openai(ps)
    target = f"localhost:{ps.up.port}"
    async with connect(ps.proxy.port, target, auth=basic(ps.s.user_token)) as (resp, r, w):
        assert resp.status == 200
        async with asyncio.timeout(TIMEOUT):
            await w.start_tls(client_ctx(ps.ca), server_hostname="localhost")
        for _ in range(3):
            models = await tls_request(
                r,
                w,
                "GET",
                "/v1/models?limit=5",
                host=target,
                headers={"Authorization": "Bearer x"},
            )
            assert models.status == 200, models.body
    assert ps.mitm_requests("openai") == 3
    assert (
        ps.proxy.metrics.registry.get_sample_value(
            "aibridge_proxy_connect_sessions_total", {"type": "mitm"}
        )
        == 1
    )
    assert (
        ps.proxy.metrics.registry.get_sample_value(
            "aibridge_proxy_mitm_responses_total", {"code": "200", "provider": "openai"}
        )
        == 3
    )
    upstream_paths = [r.path for r in ps.up.fake.requests]
    assert upstream_paths == ["/v1/models"] * 3


async def test_every_read_is_bounded_before_and_after_decryption(
    ps: ProxyStack, tmp_path: Path
) -> None:
    await _add_openai(ps)
    options = ProxyOptions(
        allowed_ports=frozenset({ps.up.port}),
        max_head_bytes=4096,
        limits=Limits(head_timeout=0.3, body_timeout=0.3, max_body_bytes=1000),
    )
    target = f"localhost:{ps.up.port}"
    async with proxy_for(ps.s, ps.ca, tmp_path, options) as proxy, asyncio.timeout(TIMEOUT):
        # An oversized head before CONNECT.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"CONNECT " + target.encode() + b" HTTP/1.1\r\nX: " + b"a" * 8000)
        assert (await read_response(reader)).status == 431
        writer.close()
        # A head that never ends.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"CONNECT " + target.encode() + b" HTTP/1.1\r\n")
        assert (await read_response(reader)).status == 408
        writer.close()
        async with connect(proxy.port, target, auth=basic(ps.s.user_token)) as (resp, r, w):
            assert resp.status == 200
            await w.start_tls(client_ctx(ps.ca), server_hostname="localhost")
            # A body above the limit, then one that stalls.
            too_big = await tls_request(
                r, w, "POST", "/v1/chat/completions", host=target, body=b"x" * 1001
            )
            assert too_big.status == 413
        async with connect(proxy.port, target, auth=basic(ps.s.user_token)) as (resp, r, w):
            await w.start_tls(client_ctx(ps.ca), server_hostname="localhost")
            w.write(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {target}\r\n"
                "Content-Length: 100\r\n\r\n{".encode()
            )
            assert (await read_response(r)).status == 408
            # An idle kept-alive tunnel is closed after the head timeout.
        async with connect(proxy.port, target, auth=basic(ps.s.user_token)) as (resp, r, w):
            await w.start_tls(client_ctx(ps.ca), server_hostname="localhost")
            assert await r.read() == b""
    assert (
        proxy.metrics.registry.get_sample_value(
            "aibridge_proxy_mitm_requests_total", {"provider": "openai"}
        )
        is None
    )


@asynccontextmanager
async def upstream_proxy(seen: list[str]) -> AsyncIterator[int]:
    """A minimal HTTP CONNECT proxy that records each Proxy-Authorization and tunnels."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        target = head.split(" ")[1]
        auth = [line for line in head.split("\r\n") if line.startswith("Proxy-Authorization:")]
        seen.append(auth[0].split(":", 1)[1].strip() if auth else "")
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await pipe(reader, writer, up_reader, up_writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def test_tunnels_go_through_the_upstream_proxy_after_the_egress_check(
    ps: ProxyStack, tmp_path: Path
) -> None:
    seen: list[str] = []
    async with echo_server() as port, upstream_proxy(seen) as up_port:
        via = UpstreamProxy.parse(f"http://corp:s%40cret@127.0.0.1:{up_port}")
        refusing = ProxyOptions(allowed_ports=frozenset({port}), upstream_proxy=via)
        async with (
            proxy_for(ps.s, ps.ca, tmp_path, refusing) as proxy,
            connect(proxy.port, f"127.0.0.1:{port}") as (resp, _r, _w),
        ):
            # Refused here: the upstream proxy never sees the private destination.
            assert resp.status == 403
        assert seen == []
        allowing = ProxyOptions(
            allowed_ports=frozenset({port}),
            allowed_private=parse_cidrs(["127.0.0.0/8"]),
            upstream_proxy=via,
        )
        async with (
            proxy_for(ps.s, ps.ca, tmp_path, allowing) as proxy,
            connect(proxy.port, f"localhost:{port}") as (resp, reader, writer),
        ):
            assert resp.status == 200
            writer.write(b"ping through two proxies")
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readexactly(24) == b"ping through two proxies"
    assert seen == [basic("s@cret", user="corp")]


def test_upstream_proxy_urls_are_checked() -> None:
    assert UpstreamProxy.parse("http://proxy.corp:3128") == UpstreamProxy("proxy.corp", 3128)
    for bad in ("https://proxy.corp:3128", "socks5://p:1080", "http://:@proxy:1", "http://"):
        with pytest.raises(ValueError, match="upstream proxy URL"):
            UpstreamProxy.parse(bad)


async def test_a_body_announced_with_expect_100_continue_is_asked_for_and_forwarded(
    ps: ProxyStack,
) -> None:
    await _add_openai(ps)
    target = f"localhost:{ps.up.port}"
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    async with connect(ps.proxy.port, target, auth=basic(ps.s.user_token)) as (resp, r, w):
        assert resp.status == 200
        async with asyncio.timeout(TIMEOUT):
            await w.start_tls(client_ctx(ps.ca), server_hostname="localhost")
            w.write(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {target}\r\n"
                "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            assert await r.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            w.write(body)
            answer = await read_response(r)
    assert answer.status == 200, answer.body
    assert b"chat.completion" in answer.body
    assert ps.mitm_requests("openai") == 1
