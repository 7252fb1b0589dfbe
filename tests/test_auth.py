"""Gateway API keys: token format, hashing, header extraction and the Authenticator
(cache, invalidation, expiry, suspension, last-used flushing) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from multidict import CIMultiDict
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aibridge.auth import Actor, Authenticator, AuthError, extract_token
from aibridge.limits import Limits
from aibridge.store import users as repo
from aibridge.store.db import session_factory
from aibridge.store.models import ApiKey, User
from aibridge.store.types import utcnow
from aibridge.testing.gateway import count_queries
from aibridge.tokens import TOKEN_PREFIX, MalformedToken, hash_secret, mint_token, parse_token

# --- token format -------------------------------------------------------------------


def test_a_minted_token_is_prefix_key_id_and_secret_and_stores_only_its_hash() -> None:
    new = mint_token()
    prefix, key_id, secret = new.token.split("-", 2)
    assert prefix == TOKEN_PREFIX
    assert key_id == new.key_id
    assert len(key_id) == 12
    int(key_id, 16)  # hex
    assert len(secret) >= 40
    assert new.secret_hash == hash_secret(secret)
    assert secret not in new.secret_hash


def test_mint_token_is_random() -> None:
    tokens = {mint_token().token for _ in range(50)}
    ids = {t.split("-")[1] for t in tokens}
    assert len(tokens) == 50
    assert len(ids) == 50


def test_hash_secret_is_deterministic_and_distinct() -> None:
    assert hash_secret("abc") == hash_secret("abc")
    assert hash_secret("abc") != hash_secret("abd")
    assert hash_secret("abc").startswith("sha256$")
    assert len(hash_secret("abc")) == len("sha256$") + 64


def test_parse_token_round_trip_with_dashes_in_secret() -> None:
    assert parse_token("aib-0a1b2c-se-cr-et") == ("0a1b2c", "se-cr-et")
    new = mint_token()
    key_id, secret = parse_token(new.token)
    assert key_id == new.key_id
    assert hash_secret(secret) == new.secret_hash


def test_parse_token_strips_surrounding_whitespace() -> None:
    assert parse_token("  aib-abc123-secret\n") == ("abc123", "secret")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "aib",
        "aib-",
        "aib-abc",
        "aib-abc-",
        "aib--secret",
        "sk-abc-secret",
        "AIB-abc-secret",
        "Bearer aib-abc-secret",
        "aib-" + "a" * 33 + "-secret",
        "aib-ab_c-secret",
        "aib-ab.c-secret",
        "aib-äbc-secret",
    ],
)
def test_parse_token_rejects_malformed(token: str) -> None:
    with pytest.raises(MalformedToken, match="malformed"):
        parse_token(token)


# --- header extraction -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer aib-1-x"}, "aib-1-x"),
        ({"authorization": "bearer   aib-1-x  "}, "aib-1-x"),
        ({"X-Api-Key": "aib-2-y"}, "aib-2-y"),
        ({"x-api-key": " aib-2-y "}, "aib-2-y"),
        # Bearer wins over X-Api-Key when both are present.
        ({"Authorization": "Bearer aib-1-x", "X-Api-Key": "aib-2-y"}, "aib-1-x"),
        # A non-bearer Authorization (e.g. Basic) falls through to X-Api-Key.
        ({"Authorization": "Basic dXNlcjpwYXNz", "X-Api-Key": "aib-2-y"}, "aib-2-y"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"Authorization": "Bearer "}, None),
        ({"Authorization": "Bearer"}, None),
        ({"X-Api-Key": "   "}, None),
        ({}, None),
    ],
)
def test_the_token_comes_from_bearer_first_then_x_api_key(
    headers: dict[str, str], expected: str | None
) -> None:
    assert extract_token(CIMultiDict(headers)) == expected


def test_headers_that_are_not_a_mapping_carry_no_token() -> None:
    assert extract_token(object()) is None


# --- Authenticator ------------------------------------------------------------------


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


async def make_key(
    sessions: async_sessionmaker[AsyncSession],
    username: str = "bob",
    role: str = "member",
) -> tuple[User, ApiKey, str]:
    async with sessions() as s, s.begin():
        user = await repo.get_user(s, username)
        if user is None:
            user = await repo.create_user(s, username, f"{username}@example.com", role)
        key, token = await repo.create_key(s, user, "test")
    return user, key, token


class FakeClock:
    """Injectable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def auth(authn: Authenticator, token: str | None) -> Actor:
    async with asyncio.timeout(60):
        return await authn.authenticate(token)


async def test_valid_key_resolves_actor(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, key, token = await make_key(sessions, "alice", "admin")
    actor = await auth(Authenticator(sessions), token)
    assert actor == Actor(user.id, "alice", "admin", key.id)
    assert actor.is_admin


async def test_a_missing_or_empty_token_is_refused_as_missing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(AuthError, match="missing"):
        await auth(Authenticator(sessions), None)
    with pytest.raises(AuthError, match="missing"):
        await auth(Authenticator(sessions), "")


async def test_wrong_secret_rejected(sessions: async_sessionmaker[AsyncSession]) -> None:
    _user, key, token = await make_key(sessions)
    authn = Authenticator(sessions)
    with pytest.raises(AuthError, match="invalid"):
        await auth(authn, f"aib-{key.id}-not-the-secret")
    # And again once the key is cached by a successful lookup.
    await auth(authn, token)
    with pytest.raises(AuthError, match="invalid"):
        await auth(authn, f"aib-{key.id}-not-the-secret")
    with pytest.raises(AuthError, match="invalid"):
        await auth(authn, token + "x")


async def test_unknown_key_id_rejected(sessions: async_sessionmaker[AsyncSession]) -> None:
    await make_key(sessions)
    with pytest.raises(AuthError, match="invalid"):
        await auth(Authenticator(sessions), "aib-deadbeef0000-whatever")


async def test_revoked_key_rejected(sessions: async_sessionmaker[AsyncSession]) -> None:
    _user, key, token = await make_key(sessions)
    async with sessions() as s, s.begin():
        _info, changed = await repo.revoke_key(s, key.id)
    assert changed
    with pytest.raises(AuthError, match="revoked"):
        await auth(Authenticator(sessions), token)


async def test_expired_key_rejected(sessions: async_sessionmaker[AsyncSession]) -> None:
    _user, key, token = await make_key(sessions)
    async with sessions() as s, s.begin():
        await s.execute(
            update(ApiKey)
            .where(ApiKey.id == key.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(AuthError, match="expired"):
        await auth(Authenticator(sessions), token)


async def test_key_with_future_expiry_works(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, _key, _token = await make_key(sessions)
    async with sessions() as s, s.begin():
        key, token = await repo.create_key(s, user, "soon", utcnow() + timedelta(hours=1))
    actor = await auth(Authenticator(sessions), token)
    assert actor.key_id == key.id


async def test_suspended_user_rejected(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, _key, token = await make_key(sessions)
    async with sessions() as s, s.begin():
        u = await repo.require_user(s, user.id)
        await repo.update_user(s, u, status="suspended")
    with pytest.raises(AuthError, match="suspended"):
        await auth(Authenticator(sessions), token)


async def test_cache_hit_makes_no_query(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _user, _key, token = await make_key(sessions)
    authn = Authenticator(sessions)
    with count_queries(engine) as first:
        await auth(authn, token)
    assert first, "the first lookup must read the database"
    with count_queries(engine) as later:
        for _ in range(5):
            await auth(authn, token)
        with pytest.raises(AuthError):
            await auth(authn, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert later == []


class BreakableSessions:
    """A session factory over ``sessions`` that raises ``error`` while ``broken`` is set."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], error: Exception) -> None:
        self.sessions = sessions
        self.error = error
        self.broken = False

    def __call__(self) -> AsyncSession:
        if self.broken:
            raise self.error
        return self.sessions()


async def test_cache_survives_broken_database(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A cached key needs no database at all: the session factory is made to explode."""
    _user, key, token = await make_key(sessions)
    database = BreakableSessions(sessions, RuntimeError("database must not be touched"))
    authn = Authenticator(database)  # type: ignore[arg-type]
    assert (await auth(authn, token)).key_id == key.id
    database.broken = True
    assert (await auth(authn, token)).key_id == key.id


async def test_cache_entry_expires_after_ttl(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _user, key, token = await make_key(sessions)
    clock = FakeClock()
    authn = Authenticator(sessions, ttl=60.0, clock=clock)
    await auth(authn, token)
    # Revoke behind the authenticator's back: the cache still answers until the TTL.
    async with sessions() as s, s.begin():
        await repo.revoke_key(s, key.id)
    clock.now += 59
    assert (await auth(authn, token)).key_id == key.id
    clock.now += 2
    with pytest.raises(AuthError, match="revoked"):
        await auth(authn, token)


async def test_the_actor_carries_the_stored_limits_of_user_and_key_in_one_query(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user, key, token = await make_key(sessions)
    async with sessions() as s, s.begin():
        await repo.update_user_limits(s, await repo.require_user(s, user.id), {"max_concurrent": 2})
        await repo.update_key_limits(s, key.id, {"allowed_models": ["claude-*"]})
    authn = Authenticator(sessions)
    with count_queries(engine) as statements:
        actor = await auth(authn, token)
    assert actor.user_limits == Limits(max_concurrent=2)
    assert actor.key_limits == Limits(allowed_models=("claude-*",))
    # The known-id set and the key with its user: limits add no round trip.
    assert len(statements) == 2, statements
    # Cached, then a user change announced: the new limits are read.
    async with sessions() as s, s.begin():
        await repo.update_user_limits(s, await repo.require_user(s, user.id), None)
    assert (await auth(authn, token)).user_limits == Limits(max_concurrent=2)
    await authn.on_keys_changed(f"user:{user.id}".encode(), None)
    assert (await auth(authn, token)).user_limits == Limits()


async def test_invalidate_after_revoke(sessions: async_sessionmaker[AsyncSession]) -> None:
    _user, key, token = await make_key(sessions)
    authn = Authenticator(sessions)
    await auth(authn, token)
    async with sessions() as s, s.begin():
        await repo.revoke_key(s, key.id)
    # Proves the cache was in use: the revoked key still passes before invalidation.
    assert (await auth(authn, token)).key_id == key.id
    authn.invalidate(key.id)
    with pytest.raises(AuthError, match="revoked"):
        await auth(authn, token)


async def test_a_key_change_drops_that_key_from_the_cache_and_an_empty_one_drops_all(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user, key1, token1 = await make_key(sessions, "bob")
    _u2, key2, token2 = await make_key(sessions, "carol")
    authn = Authenticator(sessions)
    await auth(authn, token1)
    await auth(authn, token2)
    async with sessions() as s, s.begin():
        await repo.revoke_key(s, key1.id)
        await repo.revoke_key(s, key2.id)
    # A key-id payload drops only that key.
    await authn.on_keys_changed(key1.id.encode(), None)
    with pytest.raises(AuthError, match="revoked"):
        await auth(authn, token1)
    assert (await auth(authn, token2)).key_id == key2.id
    # Empty payload drops everything.
    await authn.on_keys_changed(b"", None)
    with pytest.raises(AuthError, match="revoked"):
        await auth(authn, token2)
    assert user.username == "bob"


async def test_a_user_change_drops_that_users_keys_and_a_delivery_error_drops_all(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user, _k, token = await make_key(sessions, "bob")
    _u2, _k2, token2 = await make_key(sessions, "carol")
    authn = Authenticator(sessions)
    await auth(authn, token)
    await auth(authn, token2)
    async with sessions() as s, s.begin():
        for name in ("bob", "carol"):
            await repo.update_user(s, await repo.require_user(s, name), status="suspended")
    await authn.on_keys_changed(f"user:{user.id}".encode(), None)
    with pytest.raises(AuthError, match="suspended"):
        await auth(authn, token)
    assert (await auth(authn, token2)).username == "carol"  # still cached
    # A delivery error (messages may be lost) clears the whole cache.
    await authn.on_keys_changed(b"anything", RuntimeError("reconnected"))
    with pytest.raises(AuthError, match="suspended"):
        await auth(authn, token2)


async def test_on_keys_changed_bad_user_payload_clears_all(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    _user, key, token = await make_key(sessions)
    authn = Authenticator(sessions)
    await auth(authn, token)
    async with sessions() as s, s.begin():
        await repo.revoke_key(s, key.id)
    await authn.on_keys_changed(b"user:not-a-uuid", None)
    with pytest.raises(AuthError, match="revoked"):
        await auth(authn, token)


async def test_lookup_racing_an_invalidation_is_not_cached(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A lookup that began before an invalidation may have read pre-revocation rows, so
    its result must not be cached."""
    user, key, token = await make_key(sessions)
    async with sessions() as s, s.begin():
        _other, other_token = await repo.create_key(s, user, "other")
    authn: Authenticator
    race = False

    def factory() -> AsyncSession:
        nonlocal race
        if race:
            race = False
            authn.invalidate(key.id)  # lands while the lookup is in flight
        return sessions()

    authn = Authenticator(factory)  # type: ignore[arg-type]
    await auth(authn, other_token)  # reads which key ids exist: the next call is the lookup
    race = True
    await auth(authn, token)
    assert not race
    async with sessions() as s, s.begin():
        await repo.revoke_key(s, key.id)
    with pytest.raises(AuthError, match="revoked"):
        await auth(authn, token)


async def test_flush_writes_last_used(sessions: async_sessionmaker[AsyncSession]) -> None:
    _user, key, token = await make_key(sessions)
    authn = Authenticator(sessions)
    before = utcnow()
    await auth(authn, token)
    async with sessions() as s:
        assert (await s.get(ApiKey, key.id)).last_used_at is None  # type: ignore[union-attr]
    async with asyncio.timeout(60):
        await authn.flush_last_used()
    async with sessions() as s:
        used = (await s.execute(select(ApiKey.last_used_at).where(ApiKey.id == key.id))).scalar()
    assert used is not None
    assert before - timedelta(seconds=1) <= used <= utcnow()


async def test_stop_flushes_last_used(sessions: async_sessionmaker[AsyncSession]) -> None:
    _user, key, token = await make_key(sessions)
    authn = Authenticator(sessions, last_used_flush_interval=3600)
    authn.start()
    await auth(authn, token)
    async with asyncio.timeout(60):
        await authn.stop()
    async with sessions() as s:
        used = (await s.execute(select(ApiKey.last_used_at).where(ApiKey.id == key.id))).scalar()
    assert used is not None


async def test_failed_flush_keeps_times_for_retry(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    _user, key, token = await make_key(sessions)
    database = BreakableSessions(sessions, ConnectionError("database down"))
    authn = Authenticator(database)  # type: ignore[arg-type]
    await auth(authn, token)
    database.broken = True
    with pytest.raises(ConnectionError):
        await authn.flush_last_used()
    database.broken = False
    async with asyncio.timeout(60):
        await authn.flush_last_used()
    async with sessions() as s:
        used = (await s.execute(select(ApiKey.last_used_at).where(ApiKey.id == key.id))).scalar()
    assert used is not None


async def test_a_member_actor_is_not_an_admin() -> None:
    actor = Actor(uuid.uuid4(), "m", "member", "k")
    assert not actor.is_admin


async def test_wrong_secret_rejected_after_a_cached_hit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A hit compares against the secret verified last time; any other secret (same key
    # id, cached entry) must still be checked against the stored hash and refused.
    _user, _key, token = await make_key(sessions)
    authn = Authenticator(sessions)
    await auth(authn, token)
    await auth(authn, token)
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x", token + "é"):
        with pytest.raises(AuthError, match="invalid gateway API key"):
            await auth(authn, bad)
    assert (await auth(authn, token)).key_id == _key.id


async def test_more_keys_than_the_known_id_limit_fall_back_to_lookups(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Past ``known_ids_limit`` the id set is not held: unknown ids are looked up one by
    one (still the same answer), and good keys keep working."""
    _user, key, token = await make_key(sessions)
    await make_key(sessions, "carol")
    authn = Authenticator(sessions, known_ids_limit=1)
    with count_queries(engine) as statements:
        for _ in range(3):
            with pytest.raises(AuthError, match=r"^invalid gateway API key$"):
                await auth(authn, f"aib-{uuid.uuid4().hex[:12]}-secret")
    assert len(statements) == 1 + 3  # one read of the ids (too many), then one per id
    assert (await auth(authn, token)).key_id == key.id
