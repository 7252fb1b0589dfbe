"""Sending one upstream request: its timeout and key-pool failover (bridged and passthrough)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from aibridge.providers.apidump import CallDump
from aibridge.providers.base import Provider
from aibridge.providers.keyring import KeyWalker, PoolKey
from aibridge.providers.upstream import UpstreamBodyTooLarge, read_capped

_TIMEOUTS: dict[tuple[float | None, bool], aiohttp.ClientTimeout] = {}


def client_timeout(seconds: float | None, stream: bool) -> aiohttp.ClientTimeout:
    """The upstream timeout (immutable, so shared between requests): a total bound for a
    blocking call, a bound on silence between reads for a stream or a passthrough relay
    (an agent's stream may run for minutes)."""
    key = (seconds, stream)
    timeout = _TIMEOUTS.get(key)
    if timeout is None:
        timeout = (
            aiohttp.ClientTimeout(total=None, sock_read=seconds)
            if stream
            else aiohttp.ClientTimeout(total=seconds)
        )
        if len(_TIMEOUTS) < 64:
            _TIMEOUTS[key] = timeout
    return timeout


# Statuses on which a pooled key is set aside and the next key tried.
FAILOVER_STATUSES = frozenset({401, 429})
# A refused key's body is only drained so its connection can be reused; a real 401/429
# body is a few hundred bytes, and anything past this is cut off with the connection.
DRAIN_LIMIT = 64 * 1024


async def send_with_failover(
    session: aiohttp.ClientSession,
    provider: Provider,
    walker: KeyWalker | None,
    method: str,
    url: URL,
    *,
    body: bytes | None,
    headers: CIMultiDict[str],
    client_timeout: aiohttp.ClientTimeout,
    auto_decompress: bool,
    dump: Callable[[], CallDump] | None = None,
) -> tuple[aiohttp.ClientResponse, PoolKey | None]:
    """Send the request, trying the pool's keys in order until one is not refused.

    Nothing has reached the client while this runs, so a 401/429 on one key is retried
    with the next. Returns the first other response (the caller releases it) and the
    key used (None for bring-your-own-key, ``walker`` None). Raises
    :class:`~aibridge.providers.keyring.KeysExhausted` when no key is left, and
    transport errors (``aiohttp.ClientError``, ``TimeoutError``) as they come.
    ``dump`` (API dumps on) names the files of each attempt: every one is an upstream call.
    """
    while True:
        key = None
        if walker is not None:
            try:
                key = walker.next_key()
            except Exception:
                walker.finish()
                raise
            headers[provider.auth_header] = provider.auth_value(key.secret)
        call = None
        if dump is not None:
            call = dump()
            call.request(method, url, headers, body)
        try:
            upstream = await session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=client_timeout,
                allow_redirects=False,
                auto_decompress=auto_decompress,
            )
        except Exception as exc:
            if call is not None:
                call.request_error(exc)
            raise
        if call is not None:
            call.response(upstream)
        if walker is None or key is None:
            return upstream, None
        if upstream.status in FAILOVER_STATUSES:
            try:
                walker.mark_failed(key, upstream.status, upstream.headers)
                with contextlib.suppress(UpstreamBodyTooLarge):
                    await read_capped(upstream, DRAIN_LIMIT)
            finally:
                upstream.release()
            continue
        walker.mark_ok(key)
        walker.finish()
        return upstream, key
