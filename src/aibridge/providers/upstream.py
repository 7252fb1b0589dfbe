"""Shared upstream HTTP sessions: one pooled aiohttp ``ClientSession`` per origin.

Sessions outlive provider reloads (a reload that only rotates keys keeps its warm
connections). Limits are explicit: aiohttp's default 5-minute total timeout would
cut long agent streams and its 100-connection limit queues requests silently.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from aibridge.providers.apidump import ApiDumps

# Generous per-host limit: every in-flight stream holds a connection for minutes.
CONNECTIONS_PER_HOST = 1024
# Default caps on what the gateway buffers of one upstream answer (see Settings).
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_ERROR_BYTES = 1024 * 1024


class UpstreamBodyTooLarge(Exception):
    """An upstream body grew past the cap it was read with (``limit``, in bytes)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upstream body larger than {size_text(limit)}")
        self.limit = limit


def size_text(limit: int) -> str:
    """A byte count for messages: whole MiB as such (``32MiB``), else exact bytes (a 4 KiB
    limit must not read "0MiB")."""
    mib, rest = divmod(limit, 1024 * 1024)
    return f"{mib}MiB" if mib and not rest else f"{limit} bytes"


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole (decoded) body of ``response``, or :class:`UpstreamBodyTooLarge` as soon as
    it passes ``limit`` bytes.

    Unlike ``response.read()``, at most ``limit`` bytes (plus one chunk) are ever held, so a
    huge or endless upstream answer cannot exhaust memory. The caller still releases the
    response; released with its body unread, the connection is closed, not reused.
    """
    chunks: list[bytes] = []
    size = 0
    read = response.content.readany
    while chunk := await read():
        size += len(chunk)
        if size > limit:
            raise UpstreamBodyTooLarge(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class UpstreamClients:
    """Creates and caches one ``ClientSession`` per upstream origin.

    Also carries the API dump directories (:attr:`dumps`) and the process's caps on
    buffered upstream answers: ``max_body_bytes`` for a blocking response,
    ``max_error_bytes`` for an error body (use :func:`read_capped`).
    """

    def __init__(
        self,
        *,
        connections_per_host: int = CONNECTIONS_PER_HOST,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_error_bytes: int = MAX_ERROR_BYTES,
        dumps: ApiDumps | None = None,
    ) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._limit = connections_per_host
        self._closed = False
        self.max_body_bytes = max_body_bytes
        self.max_error_bytes = max_error_bytes
        self.dumps = dumps if dumps is not None else ApiDumps()
        """Where upstream traffic is dumped for debugging (off unless configured)."""

    def for_url(self, url: URL) -> aiohttp.ClientSession:
        """The session for ``url``'s origin, created on first use."""
        if self._closed:
            raise RuntimeError("upstream clients are closed")
        origin = f"{url.scheme}://{url.host}:{url.port}"
        session = self._sessions.get(origin)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=self._limit,
                ttl_dns_cache=300,
                enable_cleanup_closed=True,
                keepalive_timeout=90,
            )
            # The proxy from the environment (HTTP(S)_PROXY / NO_PROXY) is resolved once per
            # origin here. ``trust_env=True`` would resolve it on every request, plus a
            # ~/.netrc lookup, each in a worker thread: two thread hops per upstream call
            # (measured: docs/benchmarks.md). Netrc credentials are never wanted anyway:
            # the gateway sets the provider credential itself.
            try:
                proxy, proxy_auth = get_env_proxy_for_url(url)
            except LookupError:
                proxy, proxy_auth = None, None
            session = aiohttp.ClientSession(
                connector=connector,
                # Per-request timeouts are set by the caller; never a session-wide total.
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
                proxy=proxy,
                proxy_auth=proxy_auth,
            )
            self._sessions[origin] = session
        return session

    async def close(self) -> None:
        """Close every session (shutdown)."""
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        # Joining the dump writers blocks: off the loop.
        await asyncio.to_thread(self.dumps.close)
