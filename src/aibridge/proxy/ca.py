"""The proxy's certificate authority and the leaf certificates it mints per hostname.

The CA signs one leaf per intercepted hostname, on demand; each leaf is turned into a
server-side :class:`ssl.SSLContext` once and cached (the set of provider hosts is small,
so there is no eviction). Only the CA certificate is ever served; the key stays in a
0600 file.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aibridge.files import open_private, private_dir

CA_CERT_FILE = "proxy-ca.pem"
"""The CA certificate's file name in the data dir."""
CA_KEY_FILE = "proxy-ca-key.pem"
"""The CA key's file name in the data dir (mode 0600)."""
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# Clients with a slightly slow clock must not see a "not yet valid" leaf.
BACKDATE = datetime.timedelta(hours=1)


class CAError(Exception):
    """The CA cannot be loaded or created; ``str(err)`` says what to fix."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The key types a CA may have (the leaves are always P-256)."""


def _key_pem(key: CAKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key."""

    cert: x509.Certificate
    key: CAKey

    @classmethod
    def generate(cls, common_name: str = "aibridge proxy CA") -> CertificateAuthority:
        """A fresh self-signed CA (P-256, ten years)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """Load PEM files; the first certificate of ``cert_path`` is the CA."""
        try:
            cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, IndexError) as exc:
            raise CAError(
                f"cannot load the proxy CA from {cert_path} and {key_path}: {exc}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CAError(f"the proxy CA key {key_path} must be an EC or RSA key")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            raise CAError(f"the proxy CA key {key_path} does not match {cert_path}")
        return cls(cert, key)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``proxy-ca.pem`` and ``proxy-ca-key.pem`` (0600) into ``directory``;
        refuses to overwrite an existing CA."""
        private_dir(directory)
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        if cert_path.exists() or key_path.exists():
            raise CAError(f"a proxy CA already exists in {directory}; remove it first")
        fd = open_private(key_path, os.O_WRONLY | os.O_EXCL)
        with os.fdopen(fd, "wb") as f:
            f.write(_key_pem(self.key))
        cert_path.write_bytes(self.cert_pem())
        return cert_path, key_path

    def cert_pem(self) -> bytes:
        """The CA certificate as PEM (never the key)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def mint_leaf(self, hostname: str) -> tuple[bytes, bytes]:
        """A server certificate for ``hostname`` (DNS name or IP literal) signed by this CA;
        returns (certificate chain PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
        except ValueError:
            san = x509.DNSName(hostname)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + LEAF_VALIDITY, self.cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem()
        return chain, _key_pem(key)


def load_or_create_ca(
    data_dir: Path, cert_path: Path | None = None, key_path: Path | None = None
) -> tuple[CertificateAuthority, bool]:
    """The configured CA (both paths given), else the data dir's, else a new one saved in
    the data dir; returns (ca, created)."""
    if (cert_path is None) != (key_path is None):
        raise CAError("set both the proxy CA certificate and key files, or neither")
    if cert_path is not None and key_path is not None:
        return CertificateAuthority.load(cert_path, key_path), False
    default_cert, default_key = data_dir / CA_CERT_FILE, data_dir / CA_KEY_FILE
    if default_cert.exists() or default_key.exists():
        return CertificateAuthority.load(default_cert, default_key), False
    ca = CertificateAuthority.generate()
    ca.save(data_dir)
    return ca, True


def _server_context(chain: bytes, key: bytes, scratch: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # HTTP/1.1 only: the MITM side parses HTTP/1.1 requests.
    ctx.set_alpn_protocols(["http/1.1"])
    # ssl can only load a key from a file: write both to a private scratch dir, load, delete.
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        cert_file, key_file = Path(tmp) / "leaf.pem", Path(tmp) / "leaf-key.pem"
        os.close(open_private(key_file, os.O_WRONLY))
        key_file.write_bytes(key)
        cert_file.write_bytes(chain)
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class LeafCache:
    """Server TLS contexts per hostname, minted on first use (single flight per host)."""

    def __init__(self, ca: CertificateAuthority, scratch_dir: Path | None = None) -> None:
        self.ca = ca
        self._scratch = scratch_dir
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._flights: dict[str, asyncio.Future[ssl.SSLContext]] = {}

    async def context_for(self, hostname: str) -> ssl.SSLContext:
        """The server context presenting a leaf for ``hostname`` (lower-cased)."""
        hostname = hostname.lower()
        ctx = self._contexts.get(hostname)
        if ctx is not None:
            return ctx
        flight = self._flights.get(hostname)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[hostname] = flight
        try:
            # Key generation and signing take a millisecond or two: off the event loop.
            ctx = await asyncio.to_thread(self._mint, hostname)
        except Exception as exc:
            flight.set_exception(exc)
            # Nobody else may be waiting: do not warn about an unretrieved exception.
            flight.exception()
            raise
        except BaseException:
            flight.cancel()
            raise
        finally:
            self._flights.pop(hostname, None)
        self._contexts[hostname] = ctx
        flight.set_result(ctx)
        return ctx

    def _mint(self, hostname: str) -> ssl.SSLContext:
        chain, key = self.ca.mint_leaf(hostname)
        scratch = self._scratch or Path(tempfile.gettempdir())
        return _server_context(chain, key, scratch)
