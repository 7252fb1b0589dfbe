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

# Generous per-host limit: every in-flight stream holds a connection for minutes.
CONNECTIONS_PER_HOST = 1024


class UpstreamSessions:
    """Creates and caches one ``ClientSession`` per upstream origin."""

    def __init__(self, *, connections_per_host: int = CONNECTIONS_PER_HOST) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._limit = connections_per_host
        self._closed = False

    def get(self, url: URL) -> aiohttp.ClientSession:
        """The session for ``url``'s origin, created on first use."""
        if self._closed:
            raise RuntimeError("upstream sessions are closed")
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
