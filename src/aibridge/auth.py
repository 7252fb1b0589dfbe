"""Gateway API keys and request authentication.

The key format (``aib-<id>-<secret>``, the stored SHA-256 hash of the secret) is
:mod:`aibridge.tokens`; comparison is constant-time.

:class:`Authenticator` caches successful lookups in memory so the data plane pays no
database round trip per request; revocation, suspension and changed limits invalidate
the cache (locally at once, on other replicas through the ``api_keys_changed`` channel), and
entries also expire after ``ttl`` seconds as a safety net.

Nothing about a key (revoked, expired, its user suspended, the username) is told before
its secret has been verified: a wrong secret gets the same answer as a key id that does
not exist. Key ids that do not exist are answered from memory too: the authenticator
keeps the set of existing key ids (at most ``known_ids_limit``), re-read at most every
``negative_ttl`` seconds when an unknown id is seen and at once after a key change is
announced, so a flood of random ids costs one query per interval, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.actor import Actor
from aibridge.limits import limits_from_json
from aibridge.store.models import ApiKey, User
from aibridge.tokens import MalformedToken, hash_secret, parse_token

log = logging.getLogger(__name__)


class AuthError(Exception):
    """Authentication failed; ``str(err)`` is safe to show to the caller."""


class AuthUnavailable(Exception):
    """The key store cannot be read right now (database down); ``str(err)`` is safe to
    show to the caller, who should retry."""


INVALID_KEY = "invalid gateway API key"
UNAVAILABLE = "gateway keys cannot be verified right now (database unavailable); retry shortly"
# What a database outage looks like from a lookup.
_DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


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


def _unavailable(exc: BaseException) -> AuthUnavailable:
    log.warning(
        "could not read gateway keys from the database",
        extra={"error": f"{type(exc).__name__}: {exc}"},
    )
    return AuthUnavailable(UNAVAILABLE)


@dataclass(slots=True)
class _Entry:
    actor: Actor
    secret_hash: str
    expires_at: datetime | None
    cached_until: float
    # Why a key whose secret matches is refused anyway (revoked, user suspended); told
    # only after the secret was verified.
    refusal: str | None = None
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
        negative_ttl: float = 1.0,
        known_ids_limit: int = 100_000,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        # Existing key ids (None: not read yet, or more than ``known_ids_limit``) and when
        # they were read; -inf forces a re-read at the next unknown id.
        self._known: frozenset[str] | None = None
        self._known_at = -math.inf
        self._known_lock = asyncio.Lock()
        self._negative_ttl = negative_ttl
        self._known_limit = known_ids_limit
        # Key id -> last use, as time.time(): cheaper per request than a datetime.
        self._used: dict[str, float] = {}
        self._flush_interval = last_used_flush_interval
        self._flusher: asyncio.Task[None] | None = None
        # Bumped by every invalidation: a lookup that started before an invalidation
        # must not cache what it read (it may predate the revocation it raced with).
        self._generation = 0

    async def authenticate(self, token: str | None) -> Actor:
        """Return the actor for ``token`` or raise :class:`AuthError` (or
        :class:`AuthUnavailable` when an uncached key cannot be looked up)."""
        if not token:
            raise AuthError("missing gateway API key: send Authorization: Bearer <key>")
        try:
            key_id, secret = parse_token(token)
        except MalformedToken as err:
            raise AuthError(str(err)) from None
        entry = self._cache.get(key_id)
        if entry is None or entry.cached_until < self._clock():
            entry = await self._lookup(key_id)
        given = secret.encode()
        verified = entry.verified
        if verified is None or not hmac.compare_digest(verified, given):
            if not hmac.compare_digest(entry.secret_hash, hash_secret(secret)):
                raise AuthError(INVALID_KEY)
            entry.verified = given
        if entry.refusal is not None:
            raise AuthError(entry.refusal)
        now = time.time()
        if entry.expires_at is not None and entry.expires_at.timestamp() <= now:
            raise AuthError("gateway API key has expired; create a new one")
        self._used[key_id] = now
        return entry.actor

    async def _lookup(self, key_id: str) -> _Entry:
        if not await self._may_exist(key_id):
            raise AuthError(INVALID_KEY)
        return await self._load(key_id)

    async def _may_exist(self, key_id: str) -> bool:
        """False when ``key_id`` is surely unknown, without a query when the id set is
        fresh (read less than ``negative_ttl`` seconds ago)."""
        known = self._known
        if known is not None and key_id in known:
            return True
        if self._clock() - self._known_at >= self._negative_ttl:
            # One reader at a time: a burst of unknown ids waits for the same read.
            async with self._known_lock:
                if self._clock() - self._known_at >= self._negative_ttl:
                    await self._read_known_ids()
            known = self._known
        return known is None or key_id in known

    async def _read_known_ids(self) -> None:
        generation = self._generation
        try:
            async with self._sessions() as session:
                ids = frozenset(
                    (await session.scalars(select(ApiKey.id).limit(self._known_limit + 1))).all()
                )
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc
        if len(ids) > self._known_limit:
            # Too many to hold: every unknown id is looked up; look again after ``ttl``.
            log.warning(
                "more gateway keys than the known-id set holds; unknown ids cost a query each",
                extra={"known_ids_limit": self._known_limit},
            )
            self._known = None
            self._known_at = self._clock() + max(0.0, self._ttl - self._negative_ttl)
            return
        self._known = ids
        # A key announced while the query ran may be missing: read again at the next miss.
        self._known_at = self._clock() if generation == self._generation else -math.inf

    async def _load(self, key_id: str) -> _Entry:
        generation = self._generation
        try:
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(ApiKey, User)
                        .join(User, User.id == ApiKey.user_id)
                        .where(ApiKey.id == key_id)
                    )
                ).first()
        except _DB_ERRORS as exc:
            raise _unavailable(exc) from exc
        if row is None:
            self._cache.pop(key_id, None)
            raise AuthError(INVALID_KEY)
        key, user = row
        refusal = None
        if key.revoked_at is not None:
            refusal = "gateway API key has been revoked"
        elif user.status != "active":
            refusal = f"user {user.username!r} is suspended"
        # The limits ride on the actor (read here, with the key, once per cache fill):
        # the limiter never queries them per request. A limits change invalidates the
        # entry like a suspension does.
        actor = Actor(
            user.id,
            user.username,
            user.role,
            key.id,
            user_limits=limits_from_json(user.limits),
            key_limits=limits_from_json(key.limits),
        )
        entry = _Entry(
            actor,
            key.secret_hash,
            key.expires_at,
            self._clock() + self._ttl,
            refusal,
        )
        # Refused keys are cached too (a flood of guesses at a revoked key's secret
        # must not query per request); activation and revocation invalidate entries.
        if generation == self._generation:
            self._cache[key_id] = entry
        return entry

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one cached key, or every key when ``key_id`` is None; either way the
        next unknown key id re-reads the existing ids (the key may be new)."""
        self._generation += 1
        self._known_at = -math.inf
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    def invalidate_user(self, user_id: uuid.UUID) -> None:
        """Forget every cached key of a user (after suspension, a role or limits change)."""
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
