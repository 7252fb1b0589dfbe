"""The gateway API key format: minting, parsing and the stored hash of the secret.

Token format: ``aib-<id>-<secret>`` where ``id`` is the public key id (hex) and
``secret`` is 32 random bytes, URL-safe. Only a SHA-256 hash of the secret is
stored: secrets are high-entropy random values, so a slow password hash would add
latency without adding safety.

A value module (no database, no HTTP): the store mints keys with it, the authenticator
parses them, and the data plane recognises a gateway key by its prefix.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "aib"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly minted key: ``token`` is shown once, ``secret_hash`` is stored."""

    key_id: str
    token: str
    secret_hash: str


class MalformedToken(ValueError):
    """The string is not a gateway API key; ``str(err)`` is safe to show to the caller."""


def hash_secret(secret: str) -> str:
    """Stored form of a key secret."""
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def mint_token() -> NewToken:
    """Create a new random key id and secret."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewToken(key_id, f"{TOKEN_PREFIX}-{key_id}-{secret}", hash_secret(secret))


def parse_token(token: str) -> tuple[str, str]:
    """Split a token into (key id, secret) or raise :class:`MalformedToken`."""
    parts = token.strip().split("-", 2)
    if (
        len(parts) != 3
        or parts[0] != TOKEN_PREFIX
        or not parts[2]
        # Ids are short hex (see mint_token); rejecting others spares a DB round trip.
        or not 0 < len(parts[1]) <= 32
        or not parts[1].isascii()
        or not parts[1].isalnum()
    ):
        raise MalformedToken("malformed gateway API key: expected aib-<id>-<secret>")
    return parts[1], parts[2]
