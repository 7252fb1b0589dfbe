"""Fixtures of the proxy tests: a test CA, a TLS fake upstream, a gateway stack and a proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aibridge.proxy.ca import CertificateAuthority
from aibridge.proxy.daemon import ProxyOptions
from aibridge.testing.proxy import (
    ProxyStack,
    TLSUpstream,
    gateway_trusts,
    proxy_for,
    tls_upstream,
)
from aibridge.testing.stack import stack


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    """A CA generated for the test run."""
    return CertificateAuthority.generate("aibridge test CA")


@pytest.fixture
def ca_bundle(ca: CertificateAuthority, tmp_path: Path) -> Path:
    """The test CA as a PEM file (what SSL_CERT_FILE / NODE_EXTRA_CA_CERTS point at)."""
    path = tmp_path / "test-ca.pem"
    path.write_bytes(ca.cert_pem())
    return path


@pytest.fixture
async def upstream(ca: CertificateAuthority, tmp_path: Path) -> AsyncIterator[TLSUpstream]:
    """The fake upstream over TLS at https://localhost:PORT, trusted by the gateway."""
    with gateway_trusts(ca):
        async with tls_upstream(ca, tmp_path) as up:
            yield up


@pytest.fixture
def ps_db(sqlite_url: str) -> str:
    """The database of :func:`ps` (SQLite; a module overrides it to add PostgreSQL)."""
    return sqlite_url


@pytest.fixture
async def ps(
    ps_db: str, tmp_path: Path, upstream: TLSUpstream, ca: CertificateAuthority
) -> AsyncIterator[ProxyStack]:
    """The proxy stack with the upstream's port allowed, private tunnels refused."""
    options = ProxyOptions(allowed_ports=frozenset({443, upstream.port}))
    async with (
        stack(ps_db, tmp_path / "gw") as s,
        proxy_for(s, ca, tmp_path, options) as proxy,
    ):
        yield ProxyStack(s, upstream, proxy, ca)
