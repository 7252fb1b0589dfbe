"""Running the HTTPS proxy from settings: beside the gateway (``serve --proxy-listen``) or
on its own (``aibridge proxy``, with just the database, pub/sub and the authenticator)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.auth import Authenticator
from aibridge.config import Settings, parse_listen, parse_ports
from aibridge.files import private_dir
from aibridge.proxy.ca import CAError, CertificateAuthority, load_or_create_ca
from aibridge.proxy.daemon import ProxyOptions, listener_tls
from aibridge.proxy.runtime import (
    RunningProxy,
    database_refresh,
    database_version,
    running_proxy,
)
from aibridge.proxy.tunnel import UpstreamProxy, parse_cidrs
from aibridge.server.startup import make_pubsub
from aibridge.store.db import create_engine, session_factory
from aibridge.store.pubsub import API_KEYS_CHANGED, PubSub

log = logging.getLogger("aibridge")


class ProxyConfigError(Exception):
    """The proxy settings cannot be used; ``str(err)`` says what to fix."""


def proxy_options(settings: Settings, *, serve_metrics: bool = False) -> ProxyOptions:
    """The listener options from settings."""
    if bool(settings.proxy_tls_cert) != bool(settings.proxy_tls_key):
        raise ProxyConfigError("tls cert file and tls key file must both be set")
    try:
        cidrs = [c for c in settings.proxy_allowed_private_cidrs.split(",") if c.strip()]
        return ProxyOptions(
            allowed_ports=parse_ports(settings.proxy_allowed_ports),
            allowed_private=parse_cidrs(cidrs),
            serve_metrics=serve_metrics,
            upstream_proxy=(
                UpstreamProxy.parse(settings.proxy_upstream_proxy)
                if settings.proxy_upstream_proxy
                else None
            ),
            listen_tls=(
                listener_tls(settings.proxy_tls_cert, settings.proxy_tls_key)
                if settings.proxy_tls_cert
                else None
            ),
        )
    except ValueError as exc:
        raise ProxyConfigError(str(exc)) from None


def proxy_ca(settings: Settings, announce: Callable[[str], None]) -> CertificateAuthority:
    """The configured CA, the data dir's, or a new one in the data dir (announced)."""
    cert = Path(settings.proxy_ca_cert) if settings.proxy_ca_cert else None
    key = Path(settings.proxy_ca_key) if settings.proxy_ca_key else None
    try:
        ca, created = load_or_create_ca(settings.data_dir, cert, key)
    except CAError as exc:
        raise ProxyConfigError(str(exc)) from None
    if created:
        announce(
            f"Created the proxy CA in {settings.data_dir}: clients must trust "
            f"{settings.data_dir / 'proxy-ca.pem'} (the key stays in proxy-ca-key.pem)."
        )
    return ca


@asynccontextmanager
async def running_settings_proxy(
    settings: Settings,
    *,
    pubsub: PubSub,
    authenticator: Authenticator,
    sessions: async_sessionmaker[AsyncSession],
    gateway_url: str,
    registry: CollectorRegistry | None,
    announce: Callable[[str], None] = print,
    serve_metrics: bool = False,
) -> AsyncIterator[RunningProxy]:
    """The proxy of ``settings.proxy_listen`` in front of ``gateway_url``; its series go to
    ``registry`` (the gateway's, under ``serve``), and ``GET /metrics`` on the proxy's own
    port serves them when ``serve_metrics`` (the standalone proxy has no other port)."""
    host, port = parse_listen(settings.proxy_listen)
    options = proxy_options(settings, serve_metrics=serve_metrics)
    ca = proxy_ca(settings, announce)
    async with running_proxy(
        refresh=database_refresh(sessions),
        version=database_version(sessions),
        reconcile_interval=settings.reconcile_interval,
        pubsub=pubsub,
        authenticate=authenticator.authenticate,
        gateway_url=gateway_url,
        ca=ca,
        host=host,
        port=port,
        options=options,
        registry=registry,
        scratch_dir=private_dir(settings.data_dir / "proxy-tmp"),
    ) as proxy:
        log.info(
            "aibridge proxy listening",
            extra={
                "listen": f"{'https' if options.listen_tls else 'http'}://{host}:{proxy.port}",
                "gateway": gateway_url,
                "allowed_ports": sorted(options.allowed_ports),
            },
        )
        yield proxy


@asynccontextmanager
async def standalone_proxy(
    settings: Settings, announce: Callable[[str], None] = print
) -> AsyncIterator[RunningProxy]:
    """``aibridge proxy``: the database (already migrated by the gateway), pub/sub and a
    key cache of its own, in front of ``settings.proxy_gateway_url``."""
    if not settings.proxy_gateway_url:
        raise ProxyConfigError(
            "set --gateway-url (AIBRIDGE_PROXY_GATEWAY_URL) to the gateway's data plane, "
            "e.g. http://127.0.0.1:8080"
        )
    url = settings.resolved_database_url()
    async with AsyncExitStack() as stack:
        engine = create_engine(url)
        stack.push_async_callback(engine.dispose)
        sessions = session_factory(engine)
        pubsub = await make_pubsub(url)
        stack.push_async_callback(pubsub.close)
        authenticator = Authenticator(sessions, ttl=settings.auth_cache_ttl)
        stack.push_async_callback(
            await pubsub.subscribe(API_KEYS_CHANGED, authenticator.on_keys_changed)
        )
        authenticator.start()
        stack.push_async_callback(authenticator.stop)
        proxy = await stack.enter_async_context(
            running_settings_proxy(
                settings,
                pubsub=pubsub,
                authenticator=authenticator,
                sessions=sessions,
                gateway_url=settings.proxy_gateway_url,
                registry=CollectorRegistry(),
                announce=announce,
                serve_metrics=True,
            )
        )
        yield proxy
