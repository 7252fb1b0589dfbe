"""``aibridge mcp-servers …``: manage centrally configured MCP servers in the database.

The commands share their validation with the admin API (same rules, same messages) and
write the same audit rows (actor ``cli``). On PostgreSQL a change notification is queued
in the same transaction, so running replicas reload the moment it commits; on SQLite
running gateways notice the change at their next reconcile poll. Per-user tokens are
each user's own business: they set them through the admin API
(``PUT /api/v1/mcp-servers/{name}/credentials``), not here.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.admin.mcp_servers import server_json
from aibridge.cli import main
from aibridge.cli.common import (
    CLI_ACTOR,
    CLIFailure,
    data_dir_option,
    database_option,
    echo_json,
    echo_table,
    fail,
    json_option,
    notify_at_commit,
    open_store,
    run_command,
    settings_from_flags,
    tell_running_gateways,
    validated,
)
from aibridge.mcp.config import (
    MCPInputError,
    parse_id_or_name,
    validate_create,
    validate_patch,
)
from aibridge.store import mcp_servers as store
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import MCP_SERVERS_CHANGED
from aibridge.store.seed import check_encryption

T = TypeVar("T")

allow_option = click.option(
    "--allow",
    default=None,
    metavar="REGEX",
    help="Only inject tools whose name matches REGEX (searched anywhere in the name; "
    "anchor with ^…$).",
)
deny_option = click.option(
    "--deny",
    default=None,
    metavar="REGEX",
    help="Never inject tools whose name matches REGEX (wins over --allow).",
)
header_option = click.option(
    "--header",
    default=None,
    metavar="NAME=VALUE",
    help="Send this static header to the server (the value is a secret: encrypted at rest, "
    "never shown). Prefer --header-file to keep it out of shell history.",
)
header_file_option = click.option(
    "--header-file",
    default=None,
    metavar="NAME=PATH",
    help="Like --header, the value read from the first line of PATH ('-' for stdin).",
)
per_user_option = click.option(
    "--per-user",
    is_flag=True,
    help="Each user sends their own token (they set it with PUT "
    "/api/v1/mcp-servers/NAME/credentials).",
)


def _auth_body(
    header: str | None, header_file: str | None, per_user: bool
) -> dict[str, str] | None:
    """The API ``auth`` object for the auth options (None: none given)."""
    given = [o for o, v in (("--header", header), ("--header-file", header_file)) if v]
    if per_user:
        given.append("--per-user")
    if len(given) > 1:
        fail(f"give one of --header, --header-file and --per-user, not {' and '.join(given)}", 2)
    if per_user:
        return {"type": "per_user"}
    if header is None and header_file is None:
        return None
    option = "--header" if header is not None else "--header-file"
    spec = header if header is not None else header_file
    assert spec is not None
    name, sep, value = spec.partition("=")
    if not sep or not name:
        fail(f"{option} takes NAME=VALUE (e.g. Authorization=…), got no '='", 2)
    if header_file is not None:
        try:
            with click.open_file(value, "r") as handle:
                value = handle.readline().rstrip("\r\n")
        except OSError as exc:
            fail(f"cannot read {value}: {exc.strerror}", 2)
    return {"type": "header", "name": name, "value": value}


async def _resolve(
    session: AsyncSession, encryptor: Encryptor | None, ref: str
) -> store.MCPServerRecord:
    parsed = parse_id_or_name(ref)
    if isinstance(parsed, uuid.UUID):
        record = await store.get_server(session, encryptor, parsed)
    else:
        record = await store.get_server_by_name(session, encryptor, parsed)
    if record is None:
        raise CLIFailure(f'no MCP server "{ref}"; list them with `aibridge mcp-servers list`')
    return record


def _auth_cell(record: store.MCPServerRecord) -> str:
    auth = record.auth
    if auth.type == store.AUTH_HEADER:
        return f"header {auth.header_name}={auth.masked_value}"
    return auth.type


def _print(records: list[store.MCPServerRecord], as_json: bool, *, single: bool = False) -> None:
    if as_json:
        data = [server_json(r) for r in records]
        echo_json(data[0] if single else data)
        return
    echo_table(
        ["name", "status", "url", "allow", "deny", "auth"],
        [
            [
                r.name,
                "enabled" if r.enabled else "disabled",
                r.url,
                r.tool_allow or "-",
                r.tool_deny or "-",
                _auth_cell(r),
            ]
            for r in records
        ],
    )


@main.group("mcp-servers")
def mcp_servers() -> None:
    """Manage the MCP servers whose tools are injected into every user's requests (works
    directly on the database).

    Static header values are never printed (a masked hint at most). Use --json for scripts.
    """


@mcp_servers.command("list")
@json_option
@database_option
@data_dir_option
def list_cmd(as_json: bool, database_url: str, data_dir: str) -> None:
    """List MCP servers (enabled and disabled), ordered by name."""
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> list[store.MCPServerRecord]:
        async with open_store(settings) as (sessions, encryptor, _url):
            await check_encryption(sessions, encryptor)
            async with sessions() as session:
                return await store.list_servers(session, encryptor)

    records = run_command(go())
    if not records and not as_json:
        click.echo("No MCP servers. Add one with `aibridge mcp-servers create --help`.", err=True)
        return
    _print(records, as_json)


@mcp_servers.command("create")
@click.option("--name", required=True, help="Server name: lowercase words separated by hyphens.")
@click.option(
    "--url", required=True, help="Streamable HTTP endpoint, e.g. https://mcp.example.com/mcp."
)
@allow_option
@deny_option
@header_option
@header_file_option
@per_user_option
@click.option("--disabled", is_flag=True, help="Create the server disabled (default: enabled).")
@json_option
@database_option
@data_dir_option
def create_cmd(
    name: str,
    url: str,
    allow: str | None,
    deny: str | None,
    header: str | None,
    header_file: str | None,
    per_user: bool,
    disabled: bool,
    as_json: bool,
    database_url: str,
    data_dir: str,
) -> None:
    """Register an MCP server. Without --header/--header-file/--per-user the gateway
    connects without credentials."""
    settings = settings_from_flags(database_url, data_dir)
    body: dict[str, object] = {"name": name, "url": url, "enabled": not disabled}
    if allow is not None:
        body["tool_allow"] = allow
    if deny is not None:
        body["tool_deny"] = deny
    auth = _auth_body(header, header_file, per_user)
    if auth is not None:
        body["auth"] = auth
    spec: store.MCPServerSpec = validated(validate_create, body, "mcp-servers create")

    async def go() -> tuple[store.MCPServerRecord, str]:
        async with open_store(settings) as (sessions, encryptor, db_url):
            await check_encryption(sessions, encryptor)
            try:
                async with sessions() as session, session.begin():
                    record = await store.create_server(session, encryptor, spec)
                    store.audit_server(
                        session,
                        "create",
                        record,
                        actor_id=None,
                        actor_username=CLI_ACTOR,
                        status_code=201,
                    )
                    await notify_at_commit(session, MCP_SERVERS_CHANGED)
            except store.MCPServerExistsError as exc:
                raise CLIFailure(
                    f'MCP server "{name}" already exists; choose another name, or change it '
                    f"with `aibridge mcp-servers update {name}`"
                ) from exc
            return record, db_url

    record, db_url = run_command(go())
    _print([record], as_json, single=True)
    tell_running_gateways(db_url, settings)


@mcp_servers.command("update")
@click.argument("id_or_name")
@click.option("--name", "new_name", default=None, help="Rename the server.")
@click.option("--url", default=None, help="New Streamable HTTP endpoint.")
@click.option("--allow", default=None, metavar="REGEX", help="New allow filter ('' removes it).")
@click.option("--deny", default=None, metavar="REGEX", help="New deny filter ('' removes it).")
@header_option
@header_file_option
@per_user_option
@click.option("--no-auth", is_flag=True, help="Connect without credentials from now on.")
@click.option("--enable/--disable", "enabled", default=None, help="Enable or disable.")
@json_option
@database_option
@data_dir_option
def update_cmd(
    id_or_name: str,
    new_name: str | None,
    url: str | None,
    allow: str | None,
    deny: str | None,
    header: str | None,
    header_file: str | None,
    per_user: bool,
    no_auth: bool,
    enabled: bool | None,
    as_json: bool,
    database_url: str,
    data_dir: str,
) -> None:
    """Change MCP server ID_OR_NAME; options not given stay unchanged. Switching away from
    --per-user deletes the users' tokens for it."""
    settings = settings_from_flags(database_url, data_dir)
    try:
        parse_id_or_name(id_or_name)
    except MCPInputError as exc:
        fail(exc.message, 2)
    body: dict[str, object] = {}
    for key, value in (("name", new_name), ("url", url), ("enabled", enabled)):
        if value is not None:
            body[key] = value
    if allow is not None:
        body["tool_allow"] = allow or None
    if deny is not None:
        body["tool_deny"] = deny or None
    auth = _auth_body(header, header_file, per_user)
    if no_auth:
        if auth is not None:
            fail("--no-auth cannot be combined with --header, --header-file or --per-user", 2)
        auth = {"type": "none"}
    if auth is not None:
        body["auth"] = auth
    patch: store.MCPServerPatch = validated(validate_patch, body, "mcp-servers update")

    async def go() -> tuple[store.MCPServerRecord, str]:
        async with open_store(settings) as (sessions, encryptor, db_url):
            await check_encryption(sessions, encryptor)
            async with sessions() as session, session.begin():
                record = await _resolve(session, encryptor, id_or_name)
                try:
                    change = await store.update_server(session, encryptor, record.id, patch)
                except store.MCPServerExistsError as exc:
                    raise CLIFailure(f"{exc} Choose another name.") from exc
                except store.MCPServerNotFoundError as exc:
                    raise CLIFailure(f'MCP server "{id_or_name}" was deleted concurrently') from exc
                store.audit_server_updated(session, change, actor_id=None, actor_username=CLI_ACTOR)
                await notify_at_commit(session, MCP_SERVERS_CHANGED)
            if change.credentials_dropped:
                click.echo(
                    f"Deleted {change.credentials_dropped} user token(s): the server no longer "
                    "takes per-user credentials.",
                    err=True,
                )
            return change.after, db_url

    record, db_url = run_command(go())
    _print([record], as_json, single=True)
    tell_running_gateways(db_url, settings)


@mcp_servers.command("delete")
@click.argument("id_or_name")
@json_option
@database_option
@data_dir_option
def delete_cmd(id_or_name: str, as_json: bool, database_url: str, data_dir: str) -> None:
    """Delete MCP server ID_OR_NAME and the users' tokens for it."""
    settings = settings_from_flags(database_url, data_dir)
    try:
        parse_id_or_name(id_or_name)
    except MCPInputError as exc:
        fail(exc.message, 2)

    async def go() -> tuple[store.MCPServerRecord, str]:
        async with open_store(settings) as (sessions, encryptor, db_url):
            await check_encryption(sessions, encryptor)
            async with sessions() as session, session.begin():
                record = await _resolve(session, encryptor, id_or_name)
                if not await store.delete_server(session, record.id):
                    raise CLIFailure(f'MCP server "{id_or_name}" was deleted concurrently')
                store.audit_server(
                    session,
                    "delete",
                    record,
                    actor_id=None,
                    actor_username=CLI_ACTOR,
                    status_code=204,
                )
                await notify_at_commit(session, MCP_SERVERS_CHANGED)
            return record, db_url

    record, db_url = run_command(go())
    if as_json:
        echo_json({"id": str(record.id), "name": record.name, "deleted": True})
    else:
        click.echo(f'Deleted MCP server "{record.name}" ({record.id}).')
    tell_running_gateways(db_url, settings)
