"""Encryption at rest for provider keys and other secrets (Fernet: AES-128-CBC + HMAC).

``AIBRIDGE_ENCRYPTION_KEY`` may be any string of at least 32 characters; a Fernet key
is derived from it with HKDF-SHA256. Each ciphertext row stores a short digest of the
key that wrote it (``*_key_id``), so start-up can tell "wrong key" from "no key".
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aibridge.logredact import remember_secret

MIN_KEY_LENGTH = 32
_HKDF_INFO = b"aibridge-secrets-v1"


class EncryptionKeyError(Exception):
    """The configured encryption key is missing, too short or does not match the data."""


class Encryptor:
    """Encrypts and decrypts secret columns with one configured key."""

    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise EncryptionKeyError(
                f"AIBRIDGE_ENCRYPTION_KEY must be at least {MIN_KEY_LENGTH} characters; "
                'generate one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(raw))
        # Public digest identifying the key (never the key itself).
        self.key_id = hashlib.sha256(b"aibridge-key-id:" + raw).hexdigest()[:16]

    def encrypt(self, plaintext: str) -> str:
        """Return the ciphertext token for ``plaintext``."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str, key_id: str | None) -> str:
        """Decrypt a value written with ``key_id``; raise :class:`EncryptionKeyError` if wrong."""
        if key_id != self.key_id:
            raise EncryptionKeyError(
                "data was encrypted with a different AIBRIDGE_ENCRYPTION_KEY "
                f"(key id {key_id}, configured {self.key_id}); set the original key"
            )
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise EncryptionKeyError("ciphertext does not decrypt with the configured key") from exc


def seal(encryptor: Encryptor | None, plaintext: str) -> tuple[str, str | None]:
    """Encrypt when a key is configured: returns (stored value, key id or None)."""
    # Every secret the store keeps passes here: from now on no log line shows it.
    remember_secret(plaintext)
    if encryptor is None:
        return plaintext, None
    return encryptor.encrypt(plaintext), encryptor.key_id


def unseal(encryptor: Encryptor | None, stored: str, key_id: str | None) -> str:
    """Inverse of :func:`seal`; plaintext rows (key id None) are returned as is."""
    if key_id is None:
        remember_secret(stored)
        return stored
    if encryptor is None:
        raise EncryptionKeyError(
            "the database holds encrypted secrets but AIBRIDGE_ENCRYPTION_KEY is not set; "
            "set it to the key used when they were written"
        )
    plaintext = encryptor.decrypt(stored, key_id)
    remember_secret(plaintext)
    return plaintext
