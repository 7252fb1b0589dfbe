"""The proxy CA: files, loading, leaf certificates and their cache."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from aibridge.proxy.ca import CAError, CertificateAuthority, LeafCache, load_or_create_ca


def _leaf(ca: CertificateAuthority, host: str) -> x509.Certificate:
    chain, _key = ca.mint_leaf(host)
    leaf, issuer = x509.load_pem_x509_certificates(chain)
    assert issuer == ca.cert
    leaf.verify_directly_issued_by(ca.cert)
    return leaf


def test_leaves_name_their_host_and_are_signed_by_the_ca() -> None:
    ca = CertificateAuthority.generate()
    san = _leaf(ca, "api.openai.com").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    ip_san = _leaf(ca, "127.0.0.1").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ip_san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_the_ca_is_saved_privately_loaded_back_and_never_overwritten(tmp_path: Path) -> None:
    ca, created = load_or_create_ca(tmp_path / "data")
    assert created
    key_file = tmp_path / "data" / "proxy-ca-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again, created = load_or_create_ca(tmp_path / "data")
    assert not created
    assert again.cert == ca.cert
    with pytest.raises(CAError, match="already exists"):
        CertificateAuthority.generate().save(tmp_path / "data")


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    one, other = CertificateAuthority.generate(), CertificateAuthority.generate()
    one.save(tmp_path / "one")
    other.save(tmp_path / "other")
    with pytest.raises(CAError, match="does not match"):
        CertificateAuthority.load(
            tmp_path / "one" / "proxy-ca.pem", tmp_path / "other" / "proxy-ca-key.pem"
        )
    with pytest.raises(CAError, match="both"):
        load_or_create_ca(tmp_path, tmp_path / "one" / "proxy-ca.pem", None)
    with pytest.raises(CAError, match="cannot load"):
        CertificateAuthority.load(tmp_path / "missing.pem", tmp_path / "missing-key.pem")


def test_an_operators_rsa_ca_can_sign_leaves(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca = CertificateAuthority.load(tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    leaf = _leaf(ca, "api.anthropic.com")
    # The leaf never outlives its CA.
    assert leaf.not_valid_after_utc <= cert.not_valid_after_utc
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


async def test_leaf_contexts_are_minted_once_per_host(tmp_path: Path) -> None:
    cache = LeafCache(CertificateAuthority.generate(), tmp_path)
    first, second = await asyncio.gather(
        cache.context_for("api.openai.com"), cache.context_for("API.OpenAI.com")
    )
    assert first is second
    assert await cache.context_for("api.openai.com") is first
    assert await cache.context_for("api.anthropic.com") is not first
    # The scratch files the key passed through are gone.
    assert await asyncio.to_thread(os.listdir, tmp_path) == []
