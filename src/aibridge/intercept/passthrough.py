"""Reverse proxy for a provider's passthrough routes (models, count_tokens, …).

The provider key is injected (with failover on 401/429 across the key ring, which
needs the body buffered — passthrough bodies are small), the client's credentials
are stripped, the query is preserved and the response is streamed back unchanged.
Nothing is recorded.
"""

from __future__ import annotations

import logging
from functools import partial

import aiohttp
from aiohttp import web

from aibridge import tracing
from aibridge.intercept.bedrock import models_response
from aibridge.intercept.byok import byok_credential, uses_own_credential
from aibridge.intercept.errors import UPSTREAM_UNREACHABLE, Rejection, error_response
from aibridge.intercept.failover import client_timeout, send_with_failover
from aibridge.intercept.request import read_body
from aibridge.intercept.upstream_headers import (
    client_headers_for_upstream,
    response_headers_for_client,
)
from aibridge.providers.keyring import KeysExhausted
from aibridge.providers.routes import PassthroughRoute
from aibridge.providers.upstream import UpstreamClients

log = logging.getLogger(__name__)


async def passthrough(
    request: web.Request,
    route: PassthroughRoute,
    clients: UpstreamClients,
    *,
    byok: bool,
    max_body_bytes: int,
) -> web.StreamResponse:
    """Relay ``request`` to the provider's upstream and stream the answer back."""
    provider = route.provider
    family = provider.family
    if provider.bedrock is not None:
        # Bedrock's only passthrough routes are the models list, answered from the settings.
        return models_response(provider.bedrock, route.label)
    byok = uses_own_credential(provider, byok=byok)
    try:
        body = await read_body(request, max_body_bytes)
        if byok:
            # Same rules as bridged routes: never a silent fall-back to the pooled key.
            byok_credential(provider, request.headers)
    except Rejection as exc:
        return exc.response(family)
    url = provider.upstream_url(route.upstream_suffix, request.rel_url.raw_query_string)
    # Passthrough relays bytes without parsing them, so compression may pass through.
    headers = client_headers_for_upstream(
        request.headers, keep_credentials=byok, accept_encoding=None
    )
    headers.update(provider.options.extra_headers)
    if request.remote:
        # Several X-Forwarded-For lines are one chain (as Go's ReverseProxy joins them).
        prior = ", ".join(request.headers.getall("X-Forwarded-For", []))
        headers["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else request.remote
    # What the client asked for, as a reverse proxy reports it (the client's own copies
    # were dropped with the other X-Forwarded-* headers).
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    headers.setdefault("User-Agent", "aibridge")
    tracer = tracing.TRACER
    span = None
    if tracer is not None:
        # The data plane's root span, renamed Passthrough once the route was known.
        span = tracer.current()
        if span is not None:
            span.set_attributes(
                {
                    "provider": provider.name,
                    "passthrough_url": request.path,
                    "passthrough_method": request.method,
                    "passthrough_upstream_url": str(url.with_query(None)),
                }
            )
            if provider.options.propagate_trace_context:
                tracer.inject(span, headers)
    session = clients.for_url(url)
    walker = None if byok else provider.keys.walker()
    dumper = clients.dumps.for_dir(provider.options.api_dump_dir)
    try:
        upstream, _key = await send_with_failover(
            session,
            provider,
            walker,
            request.method,
            url,
            body=body or None,
            headers=headers,
            # A bound on silence between reads: the answer is streamed back.
            client_timeout=client_timeout(provider.options.upstream_timeout_seconds, True),
            auto_decompress=False,
            dump=None
            if dumper is None
            else partial(dumper.passthrough, provider.name, request.path, provider.auth_header),
        )
    except KeysExhausted as exc:
        if tracer is not None and span is not None:
            tracer.fail(span, str(exc))
        extra = {"Retry-After": str(exc.retry_after_seconds)} if exc.status == 429 else None
        return error_response(family, exc.status, str(exc), extra)
    except (TimeoutError, aiohttp.ClientError) as exc:
        if tracer is not None and span is not None:
            tracer.fail(span, f"upstream unreachable: {type(exc).__name__}")
        log.warning(
            "passthrough upstream error",
            extra={"provider": provider.name, "error": f"{type(exc).__name__}: {exc}"},
        )
        return error_response(family, 502, UPSTREAM_UNREACHABLE)
    if span is not None:
        span.set_attribute("http.response.status_code", upstream.status)
    try:
        out = web.StreamResponse(
            status=upstream.status, headers=response_headers_for_client(upstream.headers)
        )
        await out.prepare(request)
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out
    finally:
        upstream.release()
