"""The MCP servers repository on SQLite and PostgreSQL: the per-user token read a bridge
build makes, and what deleting a server or a user does to the tokens."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.mcp.credentials import user_tokens_loader
from aibridge.store import mcp_servers as repo
from aibridge.store.crypto import Encryptor
from aibridge.store.db import session_factory
from aibridge.store.models import MCPUserCredential, User
from aibridge.testing.gateway import count_queries


async def test_user_tokens_is_one_query_for_that_users_enabled_per_user_servers(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    encryptor = Encryptor("t" * 40)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with sessions() as s, s.begin():
        for uid, name in ((alice, "alice"), (bob, "bob")):
            s.add(User(id=uid, username=name))
        await s.flush()
        per_user = repo.MCPAuth(repo.AUTH_PER_USER)
        gh = await repo.create_server(
            s, encryptor, repo.MCPServerSpec("gh", "http://h/1", auth=per_user)
        )
        jira = await repo.create_server(
            s, encryptor, repo.MCPServerSpec("jira", "http://h/2", auth=per_user)
        )
        off = await repo.create_server(
            s, encryptor, repo.MCPServerSpec("off", "http://h/3", enabled=False, auth=per_user)
        )
        for server, uid, token in (
            (gh, alice, "alice-gh"),
            (jira, alice, "alice-jira"),
            (off, alice, "alice-off"),
            (gh, bob, "bob-gh"),
        ):
            await repo.put_credential(s, encryptor, server.id, uid, token)

    load = user_tokens_loader(sessions, encryptor)
    with count_queries(engine) as statements:
        tokens = dict(await load(alice))
    assert tokens == {gh.id: "alice-gh", jira.id: "alice-jira"}  # not the disabled server
    assert len([q for q in statements if q.lstrip().upper().startswith("SELECT")]) == 1
    assert dict(await load(bob)) == {gh.id: "bob-gh"}
    assert dict(await load(uuid.uuid4())) == {}
    # Stored sealed: the raw column is not the token.
    async with sessions() as s:
        raw = await s.scalars(select(MCPUserCredential.credential))
        assert not {"alice-gh", "alice-jira", "alice-off", "bob-gh"} & set(raw.all())

    # Deleting a server deletes its tokens; deleting a user deletes theirs (foreign key).
    async with sessions() as s, s.begin():
        assert await repo.delete_server(s, gh.id)
        assert not await repo.delete_server(s, gh.id)
    assert dict(await load(bob)) == {}
    async with sessions() as s, s.begin():
        await s.execute(delete(User).where(User.id == alice))
    async with sessions() as s:
        left = await s.scalar(select(func.count()).select_from(MCPUserCredential))
    assert left == 0
