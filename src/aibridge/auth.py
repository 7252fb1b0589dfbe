"""Gateway API keys and request authentication.

Token format: ``aib-<id>-<secret>`` where ``id`` is the public key id (hex) and
``secret`` is 32 random bytes, URL-safe. Only a SHA-256 hash of the secret is
stored: secrets are high-entropy random values, so a slow password hash would add
latency without adding safety. Comparison is constant-time.

:class:`Authenticator` caches successful lookups in memory so the data plane pays no
database round trip per request; revocation and suspension invalidate the cache
(locally at once, on other replicas through the ``api_keys_changed`` channel), and
entries also expire after ``ttl`` seconds as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.store.models import ApiKey, User

TOKEN_PREFIX = "aib"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller: who the request is attributed to."""

    user_id: uuid.UUID
    username: str
    role: str
    key_id: str

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly minted key: ``token`` is shown once, ``secret_hash`` is stored."""

    key_id: str
    token: str
    secret_hash: str


class AuthError(Exception):
    """Authentication failed; ``str(err)`` is safe to show to the caller."""


def hash_secret(secret: str) -> str:
    """Stored form of a key secret."""
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def mint_token() -> NewToken:
    """Create a new random key id and secret."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewToken(key_id, f"{TOKEN_PREFIX}-{key_id}-{secret}", hash_secret(secret))


def parse_token(token: str) -> tuple[str, str]:
    """Split a token into (key id, secret) or raise :class:`AuthError`."""
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
        raise AuthError("malformed gateway API key: expected aib-<id>-<secret>")
    return parts[1], parts[2]


def extract_token(headers: object) -> str | None:
    """Gateway key from ``Authorization: Bearer …`` or ``X-Api-Key`` (case-insensitive)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    auth = get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return str(value.strip())
    key = get("X-Api-Key")
    if key and key.strip():
        return str(key.strip())
    return None


@dataclass(slots=True)
class _Entry:
    actor: Actor
    secret_hash: str
    expires_at: datetime | None
    cached_until: float
    # The secret that last matched ``secret_hash`` (UTF-8): a cache hit with the same
    # token is then one constant-time compare instead of a SHA-256 and a hex encoding.
    # It lives no longer than the entry (``ttl``, or until the key is invalidated).
    verified: bytes | None = None


class Authenticator:
    """Resolves gateway tokens to :class:`Actor` with an in-memory cache."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        last_used_flush_interval: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        # Key id -> last use, as time.time(): cheaper per request than a datetime.
        self._used: dict[str, float] = {}
        self._flush_interval = last_used_flush_interval
        self._flusher: asyncio.Task[None] | None = None
        # Bumped by every invalidation: a lookup that started before an invalidation
        # must not cache what it read (it may predate the revocation it raced with).
        self._generation = 0

    async def authenticate(self, token: str | None) -> Actor:
        """Return the actor for ``token`` or raise :class:`AuthError`."""
        if not token:
            raise AuthError("missing gateway API key: send Authorization: Bearer <key>")
        key_id, secret = parse_token(token)
        entry = self._cache.get(key_id)
        if entry is None or entry.cached_until < self._clock():
            entry = await self._load(key_id)
        given = secret.encode()
        verified = entry.verified
        if verified is None or not hmac.compare_digest(verified, given):
            if not hmac.compare_digest(entry.secret_hash, hash_secret(secret)):
                raise AuthError("invalid gateway API key")
            entry.verified = given
        now = time.time()
        if entry.expires_at is not None and entry.expires_at.timestamp() <= now:
            raise AuthError("gateway API key has expired; create a new one")
        self._used[key_id] = now
        return entry.actor

    async def _load(self, key_id: str) -> _Entry:
        generation = self._generation
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.id == key_id)
                )
            ).first()
        if row is None:
            self._cache.pop(key_id, None)
            raise AuthError("invalid gateway API key")
        key, user = row
        if key.revoked_at is not None:
            self._cache.pop(key_id, None)
            raise AuthError("gateway API key has been revoked")
        if user.status != "active":
            self._cache.pop(key_id, None)
            raise AuthError(f"user {user.username!r} is suspended")
        entry = _Entry(
            Actor(user.id, user.username, user.role, key.id),
            key.secret_hash,
            key.expires_at,
            self._clock() + self._ttl,
        )
        if generation == self._generation:
            self._cache[key_id] = entry
        return entry

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one cached key, or every key when ``key_id`` is None."""
        self._generation += 1
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    def invalidate_user(self, user_id: uuid.UUID) -> None:
        """Forget every cached key of a user (after suspension or role change)."""
        self._generation += 1
        for kid in [k for k, e in self._cache.items() if e.actor.user_id == user_id]:
            self._cache.pop(kid, None)

    async def on_keys_changed(self, payload: bytes, error: Exception | None) -> None:
        """Pub/sub callback: payload is a key id, a ``user:<uuid>``, or empty (all)."""
        text = payload.decode(errors="replace")
        if error is not None or not text:
            self.invalidate()
        elif text.startswith("user:"):
            try:
                self.invalidate_user(uuid.UUID(text[5:]))
            except ValueError:
                self.invalidate()
        else:
            self.invalidate(text)

    def start(self) -> None:
        """Start the background flusher of last-used times."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="auth-last-used")

    # The timeout is part of the contract: shutdown must finish even if the DB hangs.
    async def stop(self, timeout: float = 3.0) -> None:  # noqa: ASYNC109
        """Stop the flusher and write pending last-used times, waiting at most ``timeout``
        seconds. Never raises: last-used times are best effort and must not stop the
        rest of a shutdown (the recorder still has to save its queue)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            async with asyncio.timeout(timeout):
                await self.flush_last_used()
        except Exception as exc:
            log.warning(
                "could not record key last-used times at shutdown",
                extra={"keys": len(self._used), "error": type(exc).__name__},
            )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush_last_used()
            except Exception:
                log.warning("could not record key last-used times; will retry", exc_info=True)

    async def flush_last_used(self) -> None:
        """Write accumulated last-used times in one transaction (off the request path)."""
        if not self._used:
            return
        used, self._used = self._used, {}
        try:
            async with self._sessions() as session, session.begin():
                for key_id, when in used.items():
                    await session.execute(
                        update(ApiKey)
                        .where(ApiKey.id == key_id)
                        .values(last_used_at=datetime.fromtimestamp(when, UTC))
                    )
        except BaseException:
            # Keep the times for the next attempt unless newer ones arrived meanwhile.
            for key_id, when in used.items():
                self._used.setdefault(key_id, when)
            raise
