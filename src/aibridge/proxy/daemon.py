"""The proxy listener: CONNECT handling, Proxy-Authorization, MITM or blind tunnel.

For a CONNECT to a host of the routing map the client must authenticate with
``Proxy-Authorization: Basic`` whose password is its gateway key (checked with the
gateway's cached authenticator before anything is decrypted); the proxy then answers
``200 Connection established``, terminates TLS with a leaf for that host and serves the
decrypted requests (:mod:`aibridge.proxy.mitm`). Any other host is tunnelled blind, no
credentials needed, unless it resolves to a private or reserved address
(:mod:`aibridge.proxy.tunnel`). ``GET /ca-cert.pem`` serves the CA certificate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aibridge.auth import AuthError, AuthUnavailable
from aibridge.proxy.ca import CertificateAuthority, LeafCache
from aibridge.proxy.http1 import BadRequest, RequestHead, read_head, simple_response
from aibridge.proxy.metrics import ProxyMetrics
from aibridge.proxy.mitm import GatewayClient, Limits, Tunnel, serve_decrypted
from aibridge.proxy.routing import Router
from aibridge.proxy.tunnel import (
    BlockedDestination,
    DialError,
    IPNetwork,
    UpstreamProxy,
    dial,
    dial_via,
    pipe,
)

log = logging.getLogger(__name__)

REALM = 'Basic realm="aibridge proxy"'
DEFAULT_ALLOWED_PORTS = frozenset({80, 443})
CLOSE_TIMEOUT = 2.0
"""Seconds a connection's orderly close may take before it is aborted."""


@dataclass(frozen=True)
class ProxyOptions:
    """Tunables of one proxy listener."""

    allowed_ports: frozenset[int] = DEFAULT_ALLOWED_PORTS
    allowed_private: Sequence[IPNetwork] = ()
    limits: Limits = field(default_factory=Limits)
    connect_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    max_head_bytes: int = 64 * 1024
    serve_metrics: bool = False
    """Answer ``GET /metrics`` with the proxy's series (the standalone proxy)."""
    upstream_proxy: UpstreamProxy | None = None
    """Where tunnels go through (decrypted requests never do)."""
    listen_tls: ssl.SSLContext | None = None
    """TLS on the listener itself (clients then use ``HTTPS_PROXY=https://…``)."""


def proxy_token(head: RequestHead) -> str | None:
    """The password of ``Proxy-Authorization: Basic base64(user:password)``, or None."""
    value = head.get("Proxy-Authorization")
    if not value:
        return None
    fields = value.split()
    if len(fields) != 2 or fields[0].lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(fields[1], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep and password else None


def listener_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server context of a TLS listener (TLS 1.2 or later); ValueError saying what
    to fix."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"load listener TLS certificate: {exc}") from None
    return ctx


def split_authority(target: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → (host, port); ValueError when malformed."""
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("malformed CONNECT target")
        port_text = rest[1:]
    else:
        host, sep, port_text = target.rpartition(":")
        if not sep:
            raise ValueError("CONNECT target needs a port")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("malformed CONNECT target")
    return host.lower().rstrip("."), int(port_text)


class ProxyServer:
    """One HTTPS proxy listener."""

    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        router: Callable[[], Router],
        authenticate: Callable[[str], Awaitable[object]],
        gateway_url: str,
        metrics: ProxyMetrics | None = None,
        options: ProxyOptions | None = None,
        scratch_dir: Path | None = None,
    ) -> None:
        self.ca = ca
        self._router = router
        self._authenticate = authenticate
        self.gateway = GatewayClient(gateway_url)
        self.metrics = metrics or ProxyMetrics()
        self.options = options or ProxyOptions()
        self._leaves = LeafCache(ca, scratch_dir)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: ephemeral)."""
        self._server = await asyncio.start_server(
            self._on_connection,
            host,
            port,
            limit=self.options.max_head_bytes,
            ssl=self.options.listen_tls,
            ssl_handshake_timeout=(
                self.options.tls_handshake_timeout if self.options.listen_tls else None
            ),
        )

    async def close(self) -> None:
        """Stop listening and end every open connection (safe to call twice)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        await self.gateway.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        graceful = False
        try:
            await self._handle(reader, writer)
            graceful = True
        except (ConnectionError, ssl.SSLError, OSError, TimeoutError) as exc:
            log.debug("proxy connection ended", extra={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            self._handlers.discard(task)
            if graceful:
                writer.close()
                try:
                    # A TLS close waits for the peer's close_notify; never for long.
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await writer.wait_closed()
                except (Exception, TimeoutError):
                    writer.transport.abort()
            else:
                # Shutdown or a broken connection: nothing left to say to the client.
                writer.transport.abort()

    async def _reply(self, writer: asyncio.StreamWriter, response: bytes) -> None:
        writer.write(response)
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_head(reader, self.options.limits.head_timeout)
        except BadRequest as exc:
            await self._reply(writer, simple_response(exc.status, "Bad Request", str(exc)))
            return
        if head is None:
            return
        if head.method == "CONNECT":
            await self._connect(head, reader, writer)
        elif head.method == "GET" and head.target == "/ca-cert.pem":
            await self._reply(
                writer,
                simple_response(
                    200,
                    "OK",
                    self.ca.cert_pem().decode(),
                    content_type="application/x-pem-file",
                    headers=(("Content-Disposition", "attachment; filename=ca-cert.pem"),),
                ),
            )
        elif head.method == "GET" and head.target == "/metrics" and self.options.serve_metrics:
            await self._reply(
                writer,
                simple_response(
                    200,
                    "OK",
                    generate_latest(self.metrics.registry).decode(),
                    content_type=CONTENT_TYPE_LATEST,
                ),
            )
        else:
            await self._reply(
                writer,
                simple_response(
                    405,
                    "Method Not Allowed",
                    "this proxy only handles CONNECT (use it as HTTPS_PROXY) and GET /ca-cert.pem",
                    headers=(("Allow", "CONNECT"),),
                ),
            )

    async def _connect(
        self, head: RequestHead, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            hostname, port = split_authority(head.target)
        except ValueError as exc:
            await self._reply(writer, simple_response(400, "Bad Request", f"{exc}: use HOST:PORT"))
            return
        if port not in self.options.allowed_ports:
            log.warning("refused CONNECT to a port not allowed", extra={"port": port})
            allowed = ", ".join(str(p) for p in sorted(self.options.allowed_ports))
            await self._reply(
                writer,
                simple_response(
                    403, "Forbidden", f"CONNECT to port {port} is not allowed (allowed: {allowed})"
                ),
            )
            return
        provider = self._router().lookup(hostname)
        if provider is None:
            await self._tunnel(hostname, port, reader, writer)
            return
        token = proxy_token(head)
        try:
            if token is None:
                raise AuthError("missing proxy credentials")
            await self._authenticate(token)
        except AuthError as exc:
            log.warning(
                "rejecting CONNECT request",
                extra={
                    "host": hostname,
                    "reason": "missing_credentials" if token is None else "invalid_credentials",
                },
            )
            await self._reply(
                writer,
                simple_response(
                    407,
                    "Proxy Authentication Required",
                    f"Proxy Authentication Required: {exc}; set "
                    "HTTPS_PROXY=http://user:<gateway key>@host:port",
                    headers=(("Proxy-Authenticate", REALM), ("Proxy-Connection", "close")),
                ),
            )
            return
        except AuthUnavailable as exc:
            await self._reply(writer, simple_response(503, "Service Unavailable", str(exc)))
            return
        ctx = await self._leaves.context_for(hostname)
        self.metrics.connect_sessions.labels("mitm").inc()
        await self._reply(writer, b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.start_tls(ctx, ssl_handshake_timeout=self.options.tls_handshake_timeout)
        await serve_decrypted(
            reader,
            writer,
            Tunnel(hostname, port, provider, token),
            router=self._router,
            gateway=self.gateway,
            metrics=self.metrics,
            limits=self.options.limits,
        )

    async def _tunnel(
        self,
        hostname: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            if self.options.upstream_proxy is not None:
                up_reader, up_writer = await dial_via(
                    self.options.upstream_proxy,
                    hostname,
                    port,
                    allowed=self.options.allowed_private,
                    timeout=self.options.connect_timeout,
                )
            else:
                up_reader, up_writer = await dial(
                    hostname,
                    port,
                    allowed=self.options.allowed_private,
                    timeout=self.options.connect_timeout,
                )
        except BlockedDestination as exc:
            log.warning(
                "blocking connection to private/reserved IP",
                extra={"host": hostname, "port": port, "error": str(exc)},
            )
            await self._reply(writer, simple_response(403, "Forbidden", "Forbidden"))
            return
        except DialError as exc:
            log.warning("tunnel dial failed", extra={"host": hostname, "error": str(exc)})
            await self._reply(writer, simple_response(502, "Bad Gateway", "Bad Gateway"))
            return
        self.metrics.connect_sessions.labels("tunneled").inc()
        await self._reply(writer, b"HTTP/1.1 200 Connection established\r\n\r\n")
        await pipe(reader, writer, up_reader, up_writer)
