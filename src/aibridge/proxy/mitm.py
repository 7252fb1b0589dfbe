"""Decrypted requests on a MITM tunnel: re-checked against the live routing map, then sent
to the gateway's data plane as ``/{provider}{path}`` with the client's gateway key, the
response streamed back as it arrives (SSE included)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from aibridge.httputil import HOP_BY_HOP
from aibridge.providers.copilot import is_copilot
from aibridge.proxy.http1 import BadRequest, RequestHead, read_body, read_head
from aibridge.proxy.metrics import ProxyMetrics
from aibridge.proxy.routing import RoutedProvider, Router

log = logging.getLogger(__name__)

# The client's provider credentials: replaced by its gateway key (never sent on).
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})
# Set by the proxy or by aiohttp from the new target.
_RECOMPUTED = frozenset({"host", "content-length", "expect"})
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Limits:
    """Read bounds on decrypted connections."""

    head_timeout: float = 10.0
    """Seconds to wait for a request head (also the idle keep-alive timeout)."""
    body_timeout: float = 60.0
    max_body_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Tunnel:
    """What a MITM tunnel was opened for: identity and route captured at CONNECT time."""

    hostname: str
    port: int
    provider: RoutedProvider
    token: str
    connect_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class GatewayClient:
    """One shared HTTP client to the gateway's data plane (never an environment proxy)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use (inside the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _path_of(target: str) -> str:
    if target.startswith("/"):
        return target
    if target.lower().startswith(("http://", "https://")):
        parts = urlsplit(target)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raise BadRequest("request target must be a path")


def _forward_headers(head: RequestHead, tunnel: Tunnel) -> list[tuple[str, str]]:
    """The request's headers for the gateway, identified by the tunnel's gateway key.

    Usually the client's provider credentials are replaced by that key. A provider that
    always takes the user's own credential (Copilot: VS Code honours only HTTPS_PROXY and
    sends its Copilot token in ``Authorization``) keeps the client's ``Authorization``, and
    the key goes in ``X-AIBridge-Token``. A client's own ``X-AIBridge-Token`` never passes:
    the proxy's credentials alone say who is calling.
    """
    own = is_copilot(tunnel.provider.type)
    out = [
        (k, v)
        for k, v in head.headers
        if (lk := k.lower()) not in HOP_BY_HOP
        and (lk not in _CREDENTIAL_HEADERS or (own and lk == "authorization"))
        and lk not in _RECOMPUTED
        and lk != "x-aibridge-token"
    ]
    if own:
        out.append(("X-AIBridge-Token", tunnel.token))
    else:
        out.append(("Authorization", f"Bearer {tunnel.token}"))
    return out


async def serve_decrypted(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tunnel: Tunnel,
    *,
    router: Callable[[], Router],
    gateway: GatewayClient,
    metrics: ProxyMetrics,
    limits: Limits,
) -> None:
    """Serve requests on a decrypted connection until the client closes it, asks to, or a
    request can no longer be routed to the tunnel's provider."""
    while True:
        try:
            head = await read_head(reader, limits.head_timeout, idle_close=True)
            if head is None:
                return
            if (head.get("Expect") or "").lower() == "100-continue":
                # curl asks before sending a larger body; the proxy reads it itself.
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await read_body(
                reader, head, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout
            )
            path = _path_of(head.target)
        except BadRequest as exc:
            writer.write(_small(exc.status, str(exc)))
            await writer.drain()
            return
        live = router().lookup(tunnel.hostname)
        if live is None or live.name != tunnel.provider.name:
            # The provider was disabled, deleted, renamed or moved since CONNECT: this
            # tunnel's identity no longer matches, so nothing more goes to the gateway on
            # it. The client reconnects and its new CONNECT sees the current map.
            log.info(
                "routing changed since CONNECT; closing the tunnel",
                extra={"connect_id": tunnel.connect_id, "host": tunnel.hostname},
            )
            writer.write(
                _small(421, "routing for this host changed since the tunnel opened; reconnect")
            )
            await writer.drain()
            return
        if not await _forward(writer, head, body, path, tunnel, gateway, metrics):
            return
        if not head.keep_alive:
            return


def _small(status: int, message: str) -> bytes:
    data = (message + "\n").encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
}


async def _forward(
    writer: asyncio.StreamWriter,
    head: RequestHead,
    body: bytes,
    path: str,
    tunnel: Tunnel,
    gateway: GatewayClient,
    metrics: ProxyMetrics,
) -> bool:
    """Send one request to the gateway and stream the answer; False when the connection
    must be closed afterwards."""
    provider = tunnel.provider.name
    url = URL(f"{gateway.base_url}/{provider}{path}", encoded=True)
    metrics.mitm_requests.labels(provider).inc()
    inflight = metrics.inflight.labels(provider)
    inflight.inc()
    code = "502"
    try:
        async with gateway.session().request(
            head.method,
            url,
            headers=_forward_headers(head, tunnel),
            data=body if body else None,
            allow_redirects=False,
        ) as resp:
            code = str(resp.status)
            return await _relay_unless_client_leaves(writer, head, resp)
    except aiohttp.ClientError as exc:
        log.warning(
            "gateway request failed",
            extra={"connect_id": tunnel.connect_id, "error": f"{type(exc).__name__}: {exc}"},
        )
        if code == "502":
            writer.write(_small(502, "the gateway cannot be reached"))
            await writer.drain()
        return False
    finally:
        inflight.dec()
        metrics.mitm_responses.labels(code, provider).inc()


async def _relay_unless_client_leaves(
    writer: asyncio.StreamWriter, head: RequestHead, resp: aiohttp.ClientResponse
) -> bool:
    """Relay the response; stop at once when the client's connection closes (a stream
    that is quiet upstream would otherwise keep the gateway request, and the upstream
    one, running for nobody). False when the client left."""
    relay = asyncio.ensure_future(_relay(writer, head, resp))
    closed = asyncio.ensure_future(writer.wait_closed())
    try:
        done, _ = await asyncio.wait({relay, closed}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        relay.cancel()
        raise
    finally:
        closed.cancel()
    if relay in done:
        relay.result()
        return True
    relay.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
        await relay
    # Leaving the response's context closes it: the gateway sees the client leave.
    resp.close()
    return False


async def _relay(
    writer: asyncio.StreamWriter, head: RequestHead, resp: aiohttp.ClientResponse
) -> None:
    has_body = head.method != "HEAD" and resp.status not in _NO_BODY_STATUS
    length = resp.headers.get("Content-Length")
    chunked = has_body and length is None
    lines = [f"HTTP/1.1 {resp.status} {resp.reason or ''}"]
    for raw_key, raw_value in resp.raw_headers:
        key = raw_key.decode("latin-1")
        if key.lower() in HOP_BY_HOP:
            continue
        lines.append(f"{key}: {raw_value.decode('latin-1')}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if not head.keep_alive:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not has_body:
        await writer.drain()
        return
    # Each piece is written as soon as it arrives: server-sent events stream live.
    async for data in resp.content.iter_any():
        if chunked:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            writer.write(data)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
