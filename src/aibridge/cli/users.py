"""``aibridge users …`` and ``aibridge keys …``: manage users and gateway API keys
directly in the database (no running gateway needed).

Commands that create a key print the token alone on the last line of stdout, so
``TOKEN=$(aibridge keys create --user bob | tail -1)`` works. On PostgreSQL, revocation
and suspension notify running replicas (``api_keys_changed``) in the same transaction,
so the change reaches them when it commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.cli import main
from aibridge.cli.common import (
    CLI_ACTOR,
    CLIFailure,
    data_dir_option,
    database_option,
    echo_json,
    echo_table,
    notify_at_commit,
    open_store,
    run_command,
    settings_from_flags,
)
from aibridge.store import users as repo
from aibridge.store.audit import add_audit
from aibridge.store.models import User
from aibridge.store.pubsub import API_KEYS_CHANGED
from aibridge.store.types import utcnow

T = TypeVar("T")


async def _require_user(session: AsyncSession, name: str) -> User:
    user = await repo.get_user(session, name)
    if user is None:
        raise CLIFailure(
            f"no user {name!r}; list users with `aibridge users list` "
            f"or create one with `aibridge users create {name}`"
        )
    return user


async def _notify(session: AsyncSession, payload: str) -> None:
    """Tell running replicas a key changed or was created (PostgreSQL only; delivered at
    commit).

    SQLite deployments run one process whose cache entries expire on their own TTL (and
    which notices a new key id within a second).
    """
    await notify_at_commit(session, API_KEYS_CHANGED, payload)


def _audit(session: AsyncSession, **kwargs: Any) -> None:
    add_audit(session, actor_id=None, actor_username=CLI_ACTOR, **kwargs)


def _fmt_time(value: str | None) -> str:
    return value or "-"


def _print_new_key(info: repo.KeyInfo, username: str, token: str) -> None:
    expiry = info.expires_at.isoformat() if info.expires_at else "never"
    click.echo(f"Created API key {info.id} ({info.name or 'unnamed'}) for {username!r}.")
    click.echo(f"Expires: {expiry}. The token is shown only once; store it now:")
    click.echo(token)


# --- users ------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Manage users (people or services that own gateway API keys)."""


@users.command("create")
@click.argument("name")
@click.option("--admin", "is_admin", is_flag=True, help="Give the user the admin role.")
@click.option("--email", default="", help="Contact e-mail address.")
@click.option("--key-name", default="default", show_default=True, help="Name of the first key.")
@database_option
@data_dir_option
def users_create(
    name: str, is_admin: bool, email: str, key_name: str, database_url: str, data_dir: str
) -> None:
    """Create user NAME and a first API key; prints the token on the last line.

    NAME: 1-63 characters of lowercase letters, digits, '.', '_' or '-', starting with a
    letter or digit.
    """
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> tuple[User, repo.KeyInfo, str]:
        async with open_store(settings) as (sessions, _enc, _url):
            async with sessions() as session, session.begin():
                role = "admin" if is_admin else "member"
                try:
                    user = await repo.create_user(session, name, email, role)
                except repo.UserExists as exc:
                    raise CLIFailure(
                        f"{exc}; pick another name, or create a key for it with "
                        f"`aibridge keys create --user {name}`"
                    ) from exc
                key, token = await repo.create_key(session, user, key_name)
                await _notify(session, key.id)
                _audit(
                    session,
                    action="create",
                    resource_type="user",
                    resource_id=str(user.id),
                    resource_name=user.username,
                    diff={"username": user.username, "email": user.email, "role": role},
                    status_code=201,
                )
                _audit(
                    session,
                    action="create",
                    resource_type="api_key",
                    resource_id=key.id,
                    resource_name=key.name,
                    diff={"user_id": str(user.id), "username": user.username, "name": key.name},
                    status_code=201,
                )
            return user, repo.KeyInfo.from_row(key), token

    user, info, token = run_command(go(), reported=(repo.UserStoreError,))
    click.echo(f"Created user {user.username!r} (role {user.role}, id {user.id}).")
    _print_new_key(info, user.username, token)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@database_option
@data_dir_option
def users_list(as_json: bool, database_url: str, data_dir: str) -> None:
    """List every user."""
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> list[dict[str, Any]]:
        async with open_store(settings) as (sessions, _enc, _url), sessions() as session:
            return [repo.user_as_dict(u) for u in await repo.list_users(session)]

    rows = run_command(go(), reported=(repo.UserStoreError,))
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["username", "role", "status", "email", "id", "created"],
        [
            [u["username"], u["role"], u["status"], u["email"] or "-", u["id"], u["created_at"]]
            for u in rows
        ],
    )


def _set_status(name: str, status: str, database_url: str, data_dir: str) -> None:
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> tuple[str, bool]:
        async with open_store(settings) as (sessions, _enc, _url):
            async with sessions() as session, session.begin():
                user = await _require_user(session, name)
                try:
                    changes = await repo.update_user(session, user, status=status)
                except repo.LastAdminError as exc:
                    raise CLIFailure(f"{exc} (e.g. `aibridge users create NAME --admin`)") from exc
                if changes:
                    _audit(session, **repo.user_updated_audit(user, changes))
                    await _notify(session, f"user:{user.id}")
            return user.username, bool(changes)

    username, changed = run_command(go(), reported=(repo.UserStoreError,))
    verb = "Suspended" if status == "suspended" else "Activated"
    if changed:
        click.echo(f"{verb} user {username!r}.")
    else:
        click.echo(f"User {username!r} is already {status}; nothing changed.")


@users.command("suspend")
@click.argument("name")
@database_option
@data_dir_option
def users_suspend(name: str, database_url: str, data_dir: str) -> None:
    """Suspend user NAME: all of its keys stop working at once (they are kept)."""
    _set_status(name, "suspended", database_url, data_dir)


@users.command("activate")
@click.argument("name")
@database_option
@data_dir_option
def users_activate(name: str, database_url: str, data_dir: str) -> None:
    """Re-activate suspended user NAME (its unrevoked keys work again)."""
    _set_status(name, "active", database_url, data_dir)


# --- keys -------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage gateway API keys (what clients send as Bearer / X-Api-Key)."""


@keys.command("create")
@click.option("--user", "username", required=True, help="Owner of the new key.")
@click.option("--name", "key_name", default="", help="A label, e.g. the laptop or agent.")
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="Expire the key after this many days (default: never).",
)
@database_option
@data_dir_option
def keys_create(
    username: str, key_name: str, expires_in_days: int | None, database_url: str, data_dir: str
) -> None:
    """Create an API key for a user; prints the token on the last line."""
    settings = settings_from_flags(database_url, data_dir)
    expires_at: datetime | None = (
        utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    )

    async def go() -> tuple[str, repo.KeyInfo, str]:
        async with open_store(settings) as (sessions, _enc, _url):
            async with sessions() as session, session.begin():
                user = await _require_user(session, username)
                key, token = await repo.create_key(session, user, key_name, expires_at)
                await _notify(session, key.id)
                _audit(session, **repo.key_created_audit(user, key))
                suspended = user.status != "active"
            if suspended:
                click.echo(
                    f"warning: user {user.username!r} is suspended; the key works only after "
                    f"`aibridge users activate {user.username}`",
                    err=True,
                )
            return user.username, repo.KeyInfo.from_row(key), token

    owner, info, token = run_command(go(), reported=(repo.UserStoreError,))
    _print_new_key(info, owner, token)


@keys.command("list")
@click.option("--user", "username", required=True, help="Whose keys to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@database_option
@data_dir_option
def keys_list(username: str, as_json: bool, database_url: str, data_dir: str) -> None:
    """List a user's API keys (never the secrets)."""
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> list[dict[str, Any]]:
        async with open_store(settings) as (sessions, _enc, _url), sessions() as session:
            user = await _require_user(session, username)
            return [k.as_dict() for k in await repo.list_keys(session, user)]

    rows = run_command(go(), reported=(repo.UserStoreError,))
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["id", "name", "status", "created", "expires", "last used"],
        [
            [
                k["id"],
                k["name"] or "-",
                k["status"],
                k["created_at"],
                _fmt_time(k["expires_at"]),
                _fmt_time(k["last_used_at"]),
            ]
            for k in rows
        ],
    )


@keys.command("revoke")
@click.argument("key_id")
@database_option
@data_dir_option
def keys_revoke(key_id: str, database_url: str, data_dir: str) -> None:
    """Revoke API key KEY_ID (the id column of `keys list`, or the middle part of the
    token aib-<id>-<secret>). Repeating it is harmless."""
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> tuple[repo.KeyInfo, bool, str]:
        async with open_store(settings) as (sessions, _enc, _url):
            async with sessions() as session, session.begin():
                try:
                    info, changed = await repo.revoke_key(session, key_id)
                except repo.KeyNotFound as exc:
                    raise CLIFailure(
                        f"{exc}; find key ids with `aibridge keys list --user NAME`"
                    ) from exc
                owner = await repo.get_user(session, info.user_id)
                owner_name = owner.username if owner else str(info.user_id)
                if changed:
                    _audit(session, **repo.key_revoked_audit(info, owner_name))
                    await _notify(session, info.id)
            return info, changed, owner_name

    info, changed, owner_name = run_command(go(), reported=(repo.UserStoreError,))
    if changed:
        click.echo(f"Revoked API key {info.id} of user {owner_name!r}.")
    else:
        click.echo(f"API key {info.id} was already revoked at {info.as_dict()['revoked_at']}.")


__all__ = ["keys", "users"]
