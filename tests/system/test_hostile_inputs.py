"""Hostile inputs against the gateway's trust promise: every use of a pooled provider key
is attributed and recorded, and nothing a client sends reaches an upstream path, leaks a
credential, or reveals what it should not.

Each section tries one attack through the real interfaces (the gateway on a loopback
port, the fake upstream logging every request it receives, real databases) and asserts
what the upstream actually saw.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from aibridge.auth import Authenticator, AuthError
from aibridge.providers.base import Provider
from aibridge.providers.routes import PassthroughRoute, match_route
from aibridge.store import users as user_store
from aibridge.store.db import session_factory
from aibridge.store.providers import ProviderRecord
from aibridge.testing import recorded
from aibridge.testing.gateway import count_queries
from aibridge.testing.providers import provider_record
from aibridge.testing.stack import TIMEOUT, Stack, stack

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
MESSAGES_BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
POOLED_KEY = "sk-upstream-pooled-0001"


async def raw_request(
    s: Stack,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, bytes]:
    """Send ``target`` (path and query) to the gateway byte for byte: no client-side
    normalisation of dot segments or percent-encoding."""
    url = URL(s.base + target, encoded=True)
    data = orjson.dumps(body) if body is not None else None
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=hdrs) as resp,
    ):
        return resp.status, await resp.read()


def member(s: Stack) -> dict[str, str]:
    """The member's gateway key as a Bearer token."""
    return {"Authorization": f"Bearer {s.user_token}"}


def error_kind(family: str, raw: bytes) -> str:
    """The error ``type`` of a provider-shaped error body (asserts the shape)."""
    body = orjson.loads(raw)
    if family == "anthropic":
        assert body["type"] == "error", body
        return str(body["error"]["type"])
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return str(body["error"]["type"])


# ============================================================ 1. passthrough path traversal

# (provider, method, path under the provider): each tries to reach another upstream path
# or method with the pooled key, unrecorded.
TRAVERSALS = [
    ("openai", "POST", "/v1/models/%2e%2e%2fchat%2fcompletions"),
    ("openai", "GET", "/v1/models/..%2f..%2fv1%2ffiles%2ffile-1"),
    ("openai", "GET", "/v1/models/..%2f..%2f..%2forganization%2fadmin_api_keys"),
    ("openai", "GET", "/v1/responses/x/../../fine_tuning/jobs"),
    ("openai", "POST", "/v1/models/.%2E/chat/completions"),
    ("openai", "GET", "/v1/models/./gpt-4o"),
    ("openai", "GET", "/v1/models/..%5c..%5cfiles"),
    ("openai", "GET", "/v1/models/%252e%252e%252fchat%252fcompletions"),
    ("openai", "GET", "/v1/models/..;/chat/completions"),
    ("openai", "GET", "/v1/models/gpt%00-4o"),
    ("openai", "GET", "/v1/models/gpt-4o%0d%0aX-Injected:%201"),
    ("openai", "GET", "/v1//models"),
    ("openai", "GET", "/v1/models/%zz"),
    ("anthropic", "POST", "/v1/models/%2e%2e/messages"),
    ("anthropic", "POST", "/api/event_logging/..%2F..%2Fv1%2Fmessages"),
]


@pytest.mark.parametrize(("provider", "method", "path"), TRAVERSALS)
async def test_path_traversal_is_a_400_and_reaches_no_upstream(
    provider: str, method: str, path: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(provider, provider, keys=[POOLED_KEY])
        body = MESSAGES_BODY if provider == "anthropic" else CHAT_BODY
        status, raw = await raw_request(
            s, method, f"/{provider}{path}", headers=member(s) | ANTHROPIC_HEADERS, body=body
        )
        assert [r.target for r in s.fake.requests] == []
        assert status == 400, raw
        assert error_kind(provider, raw) == "invalid_request_error"
        assert b"path" in raw


async def test_passthrough_forwards_the_path_and_query_byte_for_byte(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("openai", "openai", keys=[POOLED_KEY])
        await s.add_provider("anthropic", "anthropic", keys=[POOLED_KEY])
        query = "?limit=5&after=a%26b%2Bc&x=..%2f..%2f&empty="
        status, raw = await raw_request(
            s, "GET", f"/openai/v1/models/ft%3Agpt-4o%3Aacme{query}", headers=member(s)
        )
        assert status == 404, raw  # the fake knows no such model; what matters is the path
        status, raw = await raw_request(
            s, "GET", f"/anthropic/v1/models{query}", headers=member(s) | ANTHROPIC_HEADERS
        )
        assert status == 200, raw
        assert [r.target for r in s.fake.requests] == [
            f"/v1/models/ft%3Agpt-4o%3Aacme{query}",
            f"/v1/models{query}",
        ]
        assert {r.credential() for r in s.fake.requests} == {POOLED_KEY}


# --- property: the upstream URL never leaves the base path ---------------------------------

# Allow-listed suffixes under the base URL, per family: (suffix, exact?).
ALLOWED = {
    "anthropic": [
        ("/v1/messages", True),
        ("/v1/messages/count_tokens", True),
        ("/v1/models", True),
        ("/v1/models/", False),
        ("/api/event_logging/", False),
    ],
    "openai": [
        ("/chat/completions", True),
        ("/responses", True),
        ("/responses/", False),
        ("/conversations", True),
        ("/conversations/", False),
        ("/models", True),
        ("/models/", False),
    ],
}
BRIDGED = {"anthropic": {"/v1/messages"}, "openai": {"/chat/completions", "/responses"}}
TOKENS = [
    "v1", "models", "messages", "count_tokens", "chat", "completions", "responses",
    "conversations", "files", "api", "event_logging", "gpt-4o", "x", "",
    ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%5c", "%5C", "\\",
    "%00", "%0a", "%7f", "%25", "%252e", "%252f", "%25252e", ";", "..;", "%3b",
    "%", "%zz", "%2", "é", "%C3%A9", "~", ":", "@", "a b",
]  # fmt: skip
PREFIXES = ["/v1/models/", "/v1/responses/", "/v1/conversations/", "/api/event_logging/", "/"]


def record(ptype: str, base_url: str) -> ProviderRecord:
    """An enabled provider row with one key (no database needed to build its runtime)."""
    return provider_record(ptype, ptype, base_url, keys=[POOLED_KEY])


PROVIDERS = [
    Provider(record("anthropic", "https://up.example")),
    Provider(record("anthropic", "https://up.example/base/")),
    Provider(record("openai", "https://up.example/v1")),
    Provider(record("openai", "https://up.example/proxy/openai/v1")),
]


def resolved(path: str) -> str:
    """``path`` as a server resolves it: dot segments removed (RFC 3986 §5.2.4, also
    Tomcat's ``..;``)."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        bare = segment.split(";", 1)[0]
        if bare == "..":
            if out:
                out.pop()
        elif bare != ".":
            out.append(segment)
    return "/" + "/".join(out)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    provider=st.sampled_from(PROVIDERS),
    prefix=st.sampled_from(PREFIXES),
    segments=st.lists(
        st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map("".join), max_size=6
    ),
    query=st.sampled_from(["", "a=1", "x=..%2f..%2f&y=%26", "api-version=1"]),
)
def test_upstream_url_is_the_base_path_plus_an_allowed_suffix(
    provider: Provider, prefix: str, segments: list[str], query: str
) -> None:
    family = provider.family
    raw = prefix + "/".join(segments)
    tail = raw if family == "anthropic" else "/v1" + raw
    try:
        route = match_route(provider, tail)
    except ValueError:
        return  # rejected with a 400: nothing is sent
    if route is None:
        return  # 404: nothing is sent
    url = provider.upstream_url(route.upstream_suffix, query)
    base = provider.base_url.raw_path.rstrip("/")
    assert url.raw_path.startswith(base + "/")
    assert url.raw_query_string == query
    # What an upstream sees after decoding once, and twice for servers that double-decode,
    # with "\" taken as "/": never a dot segment, always an allow-listed suffix.
    view = url.raw_path
    for _ in range(2):
        view = unquote(view).replace("\\", "/")
        assert resolved(view) == view, (tail, url.raw_path)
        assert view.startswith(unquote(base) + "/")
    suffix = unquote(url.raw_path)[len(unquote(base)) :]
    assert any(
        suffix == allowed if exact else suffix.startswith(allowed)
        for allowed, exact in ALLOWED[family]
    ), suffix
    if isinstance(route, PassthroughRoute):
        assert suffix not in BRIDGED[family], (tail, suffix)


@pytest.mark.parametrize(
    ("tail", "suffix"),
    [
        ("/v1/models/.hidden", "/v1/models/.hidden"),
        ("/v1/models/a..b", "/v1/models/a..b"),
        ("/v1/models/claude-3/", "/v1/models/claude-3/"),
        ("/v1/models/%C3%A9t%C3%A9", "/v1/models/%C3%A9t%C3%A9"),
        ("/v1/models/caf\u00e9 1", "/v1/models/caf%C3%A9%201"),
        ("/v1/models/%2525", "/v1/models/%2525"),
    ],
)
def test_lookalike_but_harmless_paths_still_route(tail: str, suffix: str) -> None:
    route = match_route(PROVIDERS[0], tail)
    assert isinstance(route, PassthroughRoute)
    assert route.upstream_suffix == suffix


# ============================================================ 2. bring-your-own-key edges

OWN_KEY = "sk-client-own-key-9876"
# (provider type, method, path, body): one bridged and one passthrough route per family.
BYOK_ROUTES = [
    ("anthropic", "POST", "/v1/messages", MESSAGES_BODY),
    ("anthropic", "GET", "/v1/models", None),
    ("openai", "POST", "/v1/chat/completions", CHAT_BODY),
    ("openai", "GET", "/v1/models", None),
]
BYOK_IDS = [f"{p}-{m}-{path}" for p, m, path, _ in BYOK_ROUTES]


def upstream_credentials(s: Stack) -> list[str]:
    """Every credential header value each upstream request carried, in order."""
    return [
        value
        for r in s.fake.requests
        for name, value in r.headers.items()
        if name.lower() in ("authorization", "x-api-key", "api-key")
    ]


def no_gateway_key_upstream(s: Stack) -> None:
    """No header of any upstream request carries a gateway key."""
    for r in s.fake.requests:
        assert not any("aib-" in value for value in r.headers.values()), dict(r.headers)


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize(("ptype", "method", "path", "body"), BYOK_ROUTES, ids=BYOK_IDS)
async def test_blank_byok_header_is_centralized_and_strips_the_gateway_key(
    ptype: str,
    method: str,
    path: str,
    body: Any,
    blank: str,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("p", ptype, keys=[POOLED_KEY], settings={"allow_byok": True})
        headers = member(s) | ANTHROPIC_HEADERS | {"X-AIBridge-Token": blank}
        status, raw = await raw_request(s, method, f"/p{path}", headers=headers, body=body)
        assert status == 200, raw
        no_gateway_key_upstream(s)
        expected = "Bearer " + POOLED_KEY if ptype == "openai" else POOLED_KEY
        assert upstream_credentials(s) == [expected]


@pytest.mark.parametrize(("ptype", "method", "path", "body"), BYOK_ROUTES, ids=BYOK_IDS)
async def test_byok_never_forwards_a_gateway_key_and_never_the_pooled_key(
    ptype: str, method: str, path: str, body: Any, sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("p", ptype, keys=[POOLED_KEY], settings={"allow_byok": True})
        gateway = s.user_token
        own = (
            {"x-api-key": OWN_KEY, "Authorization": f"Bearer {gateway}"}
            if ptype == "anthropic"
            else {"Authorization": f"Bearer {OWN_KEY}", "X-Api-Key": gateway}
        )
        headers = ANTHROPIC_HEADERS | {"X-AIBridge-Token": gateway} | own
        status, raw = await raw_request(s, method, f"/p{path}", headers=headers, body=body)
        assert status == 200, raw
        no_gateway_key_upstream(s)
        expected = OWN_KEY if ptype == "anthropic" else f"Bearer {OWN_KEY}"
        assert upstream_credentials(s) == [expected]

        # Only a gateway key where the provider key belongs: refused, nothing sent.
        before = len(s.fake.requests)
        only_gateway = {"x-api-key" if ptype == "anthropic" else "Authorization": gateway}
        if ptype == "openai":
            only_gateway["Authorization"] = f"Bearer {gateway}"
        headers = ANTHROPIC_HEADERS | {"X-AIBridge-Token": gateway} | only_gateway
        status, raw = await raw_request(s, method, f"/p{path}", headers=headers, body=body)
        assert status == 401, raw
        assert error_kind(ptype, raw) in ("authentication_error", "invalid_request_error")
        assert b"gateway key" in raw
        assert len(s.fake.requests) == before


@pytest.mark.parametrize(("ptype", "method", "path", "body"), BYOK_ROUTES, ids=BYOK_IDS)
async def test_byok_on_a_provider_without_allow_byok_is_403_on_every_route(
    ptype: str, method: str, path: str, body: Any, sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("p", ptype, keys=[POOLED_KEY])
        own = {"x-api-key": OWN_KEY} if ptype == "anthropic" else {}
        if ptype == "openai":
            own["Authorization"] = f"Bearer {OWN_KEY}"
        headers = ANTHROPIC_HEADERS | {"X-AIBridge-Token": s.user_token} | own
        status, raw = await raw_request(s, method, f"/p{path}", headers=headers, body=body)
        assert status == 403, raw
        assert b"allow_byok" in raw
        assert error_kind(ptype, raw) in ("permission_error", "invalid_request_error")
        assert s.fake.requests == []


# ============================================================ 3. the key-id oracle


async def admin_call(s: Stack, method: str, path: str, body: Any = None) -> Any:
    """An admin API call that must succeed; its JSON answer (None for 204)."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.request(method, path, json=body, headers=s.admin_headers())
        assert resp.status < 300, await resp.text()
        return None if resp.status == 204 else await resp.json()


async def new_member(s: Stack, username: str) -> tuple[str, str]:
    """Create a member with one key through the admin API; (key id, token)."""
    await admin_call(s, "POST", "/api/v1/users", {"username": username, "role": "member"})
    key = await admin_call(s, "POST", f"/api/v1/users/{username}/keys", {"name": "k"})
    return key["id"], key["token"]


def with_wrong_secret(token: str) -> str:
    """The same key id with a secret that is not its own."""
    key_id = token.split("-", 2)[1]
    return f"aib-{key_id}-{'W' * 43}"


async def test_wrong_secret_is_the_same_401_whatever_the_key_id(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("anthropic", "anthropic", keys=[POOLED_KEY])
        revoked_id, revoked = await new_member(s, "eve")
        await admin_call(s, "DELETE", f"/api/v1/users/eve/keys/{revoked_id}")
        _, suspended = await new_member(s, "mallory")
        await admin_call(s, "PATCH", "/api/v1/users/mallory", {"status": "suspended"})

        async def answer(token: str, path: str) -> tuple[int, bytes]:
            headers = {"x-api-key": token} | ANTHROPIC_HEADERS
            if path.startswith("/api/"):
                return await raw_request(s, "GET", path, headers=headers)
            return await raw_request(s, "POST", path, headers=headers, body=MESSAGES_BODY)

        for path in ("/anthropic/v1/messages", "/api/v1/me"):
            answers = {
                await answer(token, path)
                for token in (
                    "aib-0123456789ab-" + "W" * 43,  # no such key id
                    with_wrong_secret(revoked),
                    with_wrong_secret(suspended),
                    with_wrong_secret(s.user_token),
                )
            }
            assert len(answers) == 1, answers
            [(status, raw)] = answers
            assert status == 401
            assert b"invalid gateway API key" in raw
        # The owner of the right secret learns why.
        status, raw = await answer(revoked, "/anthropic/v1/messages")
        assert (status, b"revoked" in raw) == (401, True)
        status, raw = await answer(suspended, "/anthropic/v1/messages")
        assert (status, b"suspended" in raw) == (401, True)
        assert s.fake.requests == []


class Monotonic:
    """An injectable monotonic clock for the authenticator."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def random_token() -> str:
    """A well-formed gateway key whose id almost surely does not exist."""
    return f"aib-{secrets.token_hex(6)}-{secrets.token_urlsafe(32)}"


async def authenticate(authn: Authenticator, token: str) -> str:
    """The key id ``token`` resolves to, or the AuthError message."""
    try:
        async with asyncio.timeout(TIMEOUT):
            return (await authn.authenticate(token)).key_id
    except AuthError as err:
        return str(err)


async def test_a_flood_of_random_key_ids_does_not_query_the_database_per_request(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as db, db.begin():
        user = await user_store.create_user(db, "flood", "flood@example.com", "member")
        key, token = await user_store.create_key(db, user, "k")
    clock = Monotonic()
    authn = Authenticator(sessions, clock=clock)
    with count_queries(engine) as statements:
        answers = await asyncio.gather(*(authenticate(authn, random_token()) for _ in range(200)))
    assert set(answers) == {"invalid gateway API key"}
    assert len(statements) <= 2, statements  # one look at the known key ids, not 200
    assert await authenticate(authn, token) == key.id

    # A key created after that look works at once when its creation is announced (the
    # admin API and the CLI do), and within the negative TTL when it is not.
    async with sessions() as db, db.begin():
        announced, announced_token = await user_store.create_key(db, user, "announced")
    await authn.on_keys_changed(announced.id.encode(), None)
    assert await authenticate(authn, announced_token) == announced.id
    async with sessions() as db, db.begin():
        silent, silent_token = await user_store.create_key(db, user, "silent")
    assert await authenticate(authn, silent_token) == "invalid gateway API key"
    clock.now += 60
    assert await authenticate(authn, silent_token) == silent.id


async def test_a_key_created_through_the_admin_api_works_at_once_after_misses(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        status, _ = await raw_request(
            s, "GET", "/api/v1/me", headers={"Authorization": f"Bearer {random_token()}"}
        )
        assert status == 401
        _, token = await new_member(s, "fresh")
        status, raw = await raw_request(
            s, "GET", "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200, raw


# ============================================================ 4. provider base URLs and names

BAD_PROVIDER_FIELDS: list[tuple[dict[str, Any], str, str]] = [
    ({"base_url": "https://user:hunter2@api.example.com/v1"}, "base_url", "credentials"),
    ({"base_url": "https://sk-secret@api.example.com/v1"}, "base_url", "credentials"),
    ({"base_url": "https://api.example.com/v1?api_key=sk-1"}, "base_url", "query"),
    ({"base_url": "https://api.example.com/v1?"}, "base_url", "query"),
    ({"base_url": "https://api.example.com/v1#frag"}, "base_url", "fragment"),
    ({"base_url": "https://api.example.com/" + "v" * 2100}, "base_url", "at most 2048"),
    ({"name": "n" * 64}, "name", "at most 63"),
    ({"display_name": "D" * 201}, "display_name", "at most 200"),
    ({"icon": "https://icons.example.com/" + "i" * 2100}, "icon", "at most 2048"),
]


@pytest.mark.parametrize(("fields", "field", "says"), BAD_PROVIDER_FIELDS)
async def test_provider_input_is_refused_with_what_to_fix(
    fields: dict[str, Any], field: str, says: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        valid = {
            "type": "openai",
            "name": "p",
            "base_url": "https://api.example.com/v1",
            "api_keys": [POOLED_KEY],
        }
        attempts = [("POST", "/api/v1/providers", valid | fields)]
        if field != "name":  # a name cannot be patched
            attempts.append(("PATCH", "/api/v1/providers/p", fields))
        for method, path, payload in attempts:
            if method == "PATCH":
                await admin_call(s, "POST", "/api/v1/providers", valid)
            async with asyncio.timeout(TIMEOUT):
                resp = await s.client.request(method, path, json=payload, headers=s.admin_headers())
                assert resp.status == 400, await resp.text()
                problem = await resp.json()
            assert [v["field"] for v in problem["validations"]] == [field], problem
            assert says in problem["validations"][0]["detail"], problem
            # The secret in a refused URL is not echoed back.
            assert "hunter2" not in str(problem) and "sk-" not in str(problem)


def test_the_cli_says_what_is_wrong_with_a_base_url(sqlite_url: str) -> None:
    from click.testing import CliRunner

    from aibridge.cli import main

    result = CliRunner().invoke(
        main,
        ["providers", "create", "p", "--type", "openai",
         "--base-url", "https://u:pw@api.example.com/v1?x=1#f", "--database-url", sqlite_url],
        env={"AIBRIDGE_ENCRYPTION_KEY": ""},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "base_url: base_url must not contain credentials" in result.stderr
    assert "pw" not in result.stderr


def test_a_stored_base_url_with_credentials_or_a_query_is_not_built() -> None:
    """Rows written before the API refused them never reach an upstream request."""
    from aibridge.providers.base import ProviderBuildError

    for url in ("https://u:pw@api.example.com/v1", "https://api.example.com/v1?k=1"):
        with pytest.raises(ProviderBuildError) as err:
            Provider(record("openai", url))
        assert "pw" not in str(err.value)


# ============================================================ 5. information exposure

NAME_PROBES = [
    ("POST", "/v1/messages", MESSAGES_BODY, ANTHROPIC_HEADERS),
    ("POST", "/v1/chat/completions", CHAT_BODY, {}),
    ("GET", "/v1/models", None, {}),
    ("GET", "/v1/models", None, ANTHROPIC_HEADERS),
    ("GET", "/v1/models/%2e%2e%2fchat%2fcompletions", None, {}),
]


async def test_without_a_valid_key_unknown_and_known_names_look_alike(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("anthropic", "anthropic", keys=[POOLED_KEY])
        await s.add_provider("openai", "openai", keys=[POOLED_KEY])
        await s.add_provider("off", "openai", enabled=False)
        credentials: list[dict[str, str]] = [
            {},
            {"Authorization": "Bearer not-a-gateway-key"},
            {"x-api-key": random_token()},
            {"Authorization": f"Bearer {with_wrong_secret(s.user_token)}"},
        ]
        for method, path, body, extra in NAME_PROBES:
            for creds in credentials:
                answers = {
                    await raw_request(s, method, f"/{name}{path}", headers=extra | creds, body=body)
                    for name in ("anthropic", "openai", "off", "nosuch", "x%2fy")
                }
                assert len(answers) == 1, (path, creds, answers)
                [(status, _)] = answers
                assert status == 401
        # With a valid key, an unknown name is a 404.
        status, raw = await raw_request(s, "GET", "/nosuch/v1/models", headers=member(s))
        assert status == 404, raw
        assert s.fake.requests == []


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", CHAT_BODY),
        ("POST", "/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}),
        ("GET", "/v1/models", None),
    ],
)
async def test_an_unreachable_upstream_is_not_described_to_the_client(
    method: str, path: str, body: Any, sqlite_url: str, tmp_path: Path
) -> None:
    with closed_port() as port:
        async with stack(sqlite_url, tmp_path) as s:
            base = f"http://127.0.0.1:{port}/internal/v1"
            await s.add_provider("p", "openai", keys=[POOLED_KEY], base_url=base)
            status, raw = await raw_request(s, method, f"/p{path}", headers=member(s), body=body)
            assert status == 502, raw
            assert error_kind("openai", raw) == "server_error"
            for leak in (str(port), "127.0.0.1", "internal", "Cannot connect", "Errno"):
                assert leak.encode() not in raw, raw
            if method == "POST":
                # The details stay with the operator: the end record has them.
                await s.flush_records()
                [row] = await recorded.interceptions(s.services)
                assert row.error_type == "server_error"
                assert row.error_message is not None and str(port) in row.error_message


async def test_metrics_and_readyz_details_can_be_kept_for_admins(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path, settings_overrides={"metrics_auth": "admin"}) as s:
        await s.add_provider("internal-llm", "openai", keys=[POOLED_KEY])

        async def get(path: str, token: str | None) -> tuple[int, bytes]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return await raw_request(s, "GET", path, headers=headers)

        for token, expected in ((None, 401), (random_token(), 401), (s.user_token, 403)):
            status, raw = await get("/metrics", token)
            assert status == expected, raw
            assert b"aibridge_" not in raw
            status, raw = await get("/readyz", token)
            assert (status, orjson.loads(raw)) == (200, {"status": "ok"})
        status, raw = await get("/metrics", s.admin_token)
        assert status == 200 and b"aibridge_" in raw
        status, raw = await get("/readyz", s.admin_token)
        assert status == 200 and b"internal-llm" in raw
        status, raw = await get("/healthz", None)
        assert status == 200


async def test_metrics_and_readyz_are_open_by_default(sqlite_url: str, tmp_path: Path) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("internal-llm", "openai", keys=[POOLED_KEY])
        status, raw = await raw_request(s, "GET", "/metrics")
        assert status == 200 and b"aibridge_" in raw
        status, raw = await raw_request(s, "GET", "/readyz")
        assert status == 200 and b"internal-llm" in raw
