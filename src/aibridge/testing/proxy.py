"""Test helpers for the HTTPS proxy: a TLS fake upstream, the gateway trusting the test CA,
a proxy in front of a stack, and a raw CONNECT client."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiohttp.connector
from aiohttp import web

from aibridge.fakellm import FakeLLM
from aibridge.proxy.ca import CertificateAuthority
from aibridge.proxy.daemon import ProxyOptions
from aibridge.proxy.runtime import RunningProxy, database_refresh, running_proxy
from aibridge.testing.stack import TIMEOUT, Stack


@dataclass
class TLSUpstream:
    """A :class:`FakeLLM` served over TLS with a certificate from the test CA."""

    fake: FakeLLM
    port: int

    def url(self, host: str = "localhost") -> str:
        """``https://host:port`` (no ``/v1``)."""
        return f"https://{host}:{self.port}"


def _server_ctx(ca: CertificateAuthority, hosts: tuple[str, ...], tmp: Path) -> ssl.SSLContext:
    chain, key = ca.mint_leaf(hosts[0])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_file, key_file = tmp / "upstream.pem", tmp / "upstream-key.pem"
    cert_file.write_bytes(chain)
    key_file.write_bytes(key)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


@asynccontextmanager
async def tls_upstream(
    ca: CertificateAuthority, tmp: Path, host: str = "localhost", fake: FakeLLM | None = None
) -> AsyncIterator[TLSUpstream]:
    """A fake upstream (``fake``, by default a new :class:`FakeLLM`) on 127.0.0.1 over TLS,
    its certificate naming ``host``."""
    fake = fake if fake is not None else FakeLLM()
    runner = web.AppRunner(
        fake.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_server_ctx(ca, (host,), tmp))
    await site.start()
    port = int(runner.addresses[0][1])
    fake.url = f"https://{host}:{port}"
    try:
        yield TLSUpstream(fake, port)
    finally:
        await runner.cleanup()


@contextmanager
def gateway_trusts(ca: CertificateAuthority) -> Iterator[None]:
    """Make the gateway's upstream clients (aiohttp's shared verified context) trust the
    test CA, the way an operator would add a CA to the system store. An extra anchor of
    a throwaway CA cannot make any other test pass or fail."""
    ctx = aiohttp.connector._SSL_CONTEXT_VERIFIED
    ctx.load_verify_locations(cadata=ca.cert_pem().decode())
    yield


def client_ctx(ca: CertificateAuthority) -> ssl.SSLContext:
    """A client context trusting only the test CA."""
    return ssl.create_default_context(cadata=ca.cert_pem().decode())


@asynccontextmanager
async def proxy_for(
    s: Stack, ca: CertificateAuthority, tmp: Path, options: ProxyOptions
) -> AsyncIterator[RunningProxy]:
    """A proxy for the stack's gateway, routing from its database, on a loopback port."""
    services = s.services
    async with running_proxy(
        refresh=database_refresh(services.sessions),
        pubsub=services.pubsub,
        authenticate=services.authenticator.authenticate,
        gateway_url=s.base,
        ca=ca,
        host="127.0.0.1",
        port=0,
        options=options,
        scratch_dir=tmp,
    ) as proxy:
        yield proxy


@dataclass
class ProxyStack:
    """A gateway stack, the TLS upstream and a proxy in front of the gateway."""

    s: Stack
    up: TLSUpstream
    proxy: RunningProxy
    ca: CertificateAuthority

    def mitm_requests(self, provider: str) -> float:
        """``aibridge_proxy_mitm_requests_total{provider}``."""
        value = self.proxy.metrics.registry.get_sample_value(
            "aibridge_proxy_mitm_requests_total", {"provider": provider}
        )
        return value or 0.0


def basic(token: str, user: str = "dev") -> str:
    """``Proxy-Authorization`` value with ``token`` as the password."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


@dataclass
class Response:
    """A response read off a raw connection."""

    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader, *, has_body: bool = True) -> Response:
    """One HTTP/1.1 response (Content-Length, chunked, or none for CONNECT's 200)."""
    async with asyncio.timeout(TIMEOUT):
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = b""
        if not has_body:
            return Response(status, headers, body)
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        return Response(status, headers, body)


@asynccontextmanager
async def connect(
    proxy_port: int, target: str, *, auth: str | None = None
) -> AsyncIterator[tuple[Response, asyncio.StreamReader, asyncio.StreamWriter]]:
    """Open a connection to the proxy and send ``CONNECT target``; yields the proxy's
    answer and the streams (closed on exit)."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    try:
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if auth is not None:
            lines.append(f"Proxy-Authorization: {auth}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        resp = await read_response(reader, has_body=False)
        if resp.status != 200 and "content-length" in resp.headers:
            async with asyncio.timeout(TIMEOUT):
                resp.body = await reader.readexactly(int(resp.headers["content-length"]))
        yield resp, reader, writer
    finally:
        writer.close()


async def tls_request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    *,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Response:
    """Send one request on an (already TLS) stream and read the answer."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return await read_response(reader)


async def aiohttp_via_proxy(
    proxy_port: int, url: str, token: str, ca: CertificateAuthority
) -> tuple[int, str]:
    """GET ``url`` through the proxy with a fresh connection; (status, body)."""
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(
            url,
            proxy=f"http://127.0.0.1:{proxy_port}",
            proxy_auth=aiohttp.BasicAuth("dev", token),
            ssl=client_ctx(ca),
            headers={"Authorization": "Bearer sk-client-own-key"},
        ) as resp,
    ):
        return resp.status, await resp.text()
