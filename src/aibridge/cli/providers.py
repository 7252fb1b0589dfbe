"""``aibridge providers …``: manage upstream AI providers directly in the database.

The commands share their validation with the admin API (same rules, same messages)
and write the same audit rows (actor ``cli``). On PostgreSQL a change notification is
queued in the same transaction, so running replicas reload the moment it commits; on
SQLite running gateways notice the change at their next reconcile poll.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import IO, TypeVar

import click
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.admin.providers import provider_json
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
from aibridge.providers.validation import (
    ProviderInputError,
    parse_id_or_name,
    validate_create,
    validate_patch,
)
from aibridge.store import providers as store
from aibridge.store.crypto import Encryptor
from aibridge.store.models import PROVIDER_TYPES
from aibridge.store.pubsub import PROVIDERS_CHANGED
from aibridge.store.seed import check_encryption

T = TypeVar("T")
TYPES_HELP = ", ".join(PROVIDER_TYPES)


async def _notify(session: AsyncSession) -> None:
    await notify_at_commit(session, PROVIDERS_CHANGED)


async def _resolve(
    session: AsyncSession, encryptor: Encryptor | None, ref: str
) -> store.ProviderRecord:
    parsed = parse_id_or_name(ref)
    if isinstance(parsed, uuid.UUID):
        record = await store.get_provider(session, encryptor, parsed)
    else:
        record = await store.get_provider_by_name(session, encryptor, parsed)
    if record is None:
        raise CLIFailure(f'no provider "{ref}"; list them with `aibridge providers list`')
    return record


def _keys_cell(record: store.ProviderRecord) -> str:
    if not record.keys:
        return "-"
    return ", ".join(f"{str(k.id)[:8]}={k.masked}" for k in record.keys)


def _status(record: store.ProviderRecord) -> str:
    if record.deleted:
        return "deleted"
    return "enabled" if record.enabled else "disabled"


def _print(records: list[store.ProviderRecord], as_json: bool, *, single: bool = False) -> None:
    if as_json:
        data = [provider_json(r) | ({"deleted": True} if r.deleted else {}) for r in records]
        echo_json(data[0] if single else data)
        return
    echo_table(
        ["name", "type", "status", "base_url", "keys"],
        [[r.name, r.type, _status(r), r.base_url, _keys_cell(r)] for r in records],
    )


def _load_settings_arg(value: str) -> object:
    """``--settings`` value: JSON text, ``@path`` to a JSON file, or ``null``."""
    raw: str | bytes = value
    if value.startswith("@"):
        try:
            raw = Path(value[1:]).read_bytes()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc}); e.g. '{{\"allow_byok\": true}}'"
        ) from exc


def _read_key_file(handle: IO[str] | None) -> list[str]:
    if handle is None:
        return []
    # One key per line; only the line break is removed, so stray spaces are reported.
    return [line.rstrip("\r\n") for line in handle if line.strip()]


@main.group()
def providers() -> None:
    """Manage upstream AI providers (works directly on the database).

    Keys are never printed in full: listings show each key's id prefix and a masked
    form. Use --json for scripts.
    """


@providers.command("list")
@click.option("--deleted", "include_deleted", is_flag=True, help="Include soft-deleted providers.")
@json_option
@database_option
@data_dir_option
def list_cmd(include_deleted: bool, as_json: bool, database_url: str, data_dir: str) -> None:
    """List providers (enabled and disabled), ordered by name."""
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> list[store.ProviderRecord]:
        async with open_store(settings) as (sessions, encryptor, _url):
            await check_encryption(sessions, encryptor)
            async with sessions() as session:
                return await store.list_providers(
                    session, encryptor, include_deleted=include_deleted
                )

    records = run_command(go())
    if not records and not as_json:
        click.echo("No providers. Create one with `aibridge providers create --help`.", err=True)
        return
    _print(records, as_json)


@providers.command("create")
@click.argument("name", required=False)
@click.option("--name", "name_opt", default=None, help="Same as the NAME argument.")
@click.option("--type", "ptype", required=True, help=f"Provider type: {TYPES_HELP}.")
@click.option(
    "--base-url",
    default=None,
    help="Upstream URL, e.g. https://api.openai.com/v1 (default: the type's own, for every "
    "type but azure and openai-compat; it is stored on the provider).",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Upstream key (repeatable; the first is the primary). Prefer --api-key-file to keep "
    "keys out of shell history.",
)
@click.option(
    "--api-key-file",
    type=click.File("r"),
    default=None,
    help="Read keys from a file, one per line ('-' for stdin).",
)
@click.option("--display-name", default=None, help="Human-friendly name (default: NAME).")
@click.option("--icon", default=None, help="Icon URL or identifier.")
@click.option("--disabled", is_flag=True, help="Create the provider disabled (default: enabled).")
@click.option(
    "--settings",
    "settings_arg",
    default=None,
    help="Settings as JSON or @file.json, e.g. '{\"upstream_timeout_seconds\": 600}'.",
)
@json_option
@database_option
@data_dir_option
def create_cmd(
    name: str | None,
    name_opt: str | None,
    ptype: str,
    base_url: str | None,
    api_keys: tuple[str, ...],
    api_key_file: IO[str] | None,
    display_name: str | None,
    icon: str | None,
    disabled: bool,
    settings_arg: str | None,
    as_json: bool,
    database_url: str,
    data_dir: str,
) -> None:
    """Create provider NAME (lowercase words separated by hyphens, e.g. my-openai).

    The provider is enabled unless --disabled is given.
    """
    if name is not None and name_opt is not None and name != name_opt:
        fail(f"the NAME argument ({name!r}) and --name ({name_opt!r}) disagree; give one", 2)
    name = name if name is not None else name_opt or ""
    settings = settings_from_flags(database_url, data_dir)
    body: dict[str, object] = {
        "type": ptype,
        "name": name,
        "enabled": not disabled,
        "api_keys": [*api_keys, *_read_key_file(api_key_file)],
    }
    if base_url is not None:
        body["base_url"] = base_url
    if display_name is not None:
        body["display_name"] = display_name
    if icon is not None:
        body["icon"] = icon
    if settings_arg is not None:
        body["settings"] = _load_settings_arg(settings_arg)
    spec = validated(validate_create, body, "providers create")

    async def go() -> tuple[store.ProviderRecord, str]:
        async with open_store(settings) as (sessions, encryptor, url):
            await check_encryption(sessions, encryptor)
            try:
                async with sessions() as session, session.begin():
                    record = await store.create_provider(session, encryptor, spec)
                    store.audit_created(session, record, actor_id=None, actor_username=CLI_ACTOR)
                    await _notify(session)
            except store.ProviderExistsError as exc:
                raise CLIFailure(
                    f'provider "{name}" already exists; choose another name, or change it '
                    f"with `aibridge providers update {name}`"
                ) from exc
            return record, url

    record, url = run_command(go())
    _print([record], as_json, single=True)
    tell_running_gateways(url, settings)


@providers.command("update")
@click.argument("id_or_name")
@click.option("--display-name", default=None, help="New display name ('' resets it to the name).")
@click.option("--icon", default=None, help="New icon.")
@click.option("--enable/--disable", "enabled", default=None, help="Enable or disable.")
@click.option("--base-url", default=None, help="New upstream URL.")
@click.option("--add-key", "add_keys", multiple=True, help="Add an upstream key (repeatable).")
@click.option(
    "--add-key-file",
    type=click.File("r"),
    default=None,
    help="Add keys read from a file, one per line ('-' for stdin).",
)
@click.option(
    "--remove-key",
    "remove_keys",
    multiple=True,
    help="Remove the key with this id or unique id prefix (see `providers list`; repeatable).",
)
@click.option("--clear-keys", is_flag=True, help="Remove every existing key first.")
@click.option(
    "--settings",
    "settings_arg",
    default=None,
    help="Replace the settings with this JSON (or @file.json); 'null' clears them.",
)
@json_option
@database_option
@data_dir_option
def update_cmd(
    id_or_name: str,
    display_name: str | None,
    icon: str | None,
    enabled: bool | None,
    base_url: str | None,
    add_keys: tuple[str, ...],
    add_key_file: IO[str] | None,
    remove_keys: tuple[str, ...],
    clear_keys: bool,
    settings_arg: str | None,
    as_json: bool,
    database_url: str,
    data_dir: str,
) -> None:
    """Change provider ID_OR_NAME; options not given stay unchanged.

    Keys are kept in age order (the oldest is the primary); added keys go last.
    """
    settings = settings_from_flags(database_url, data_dir)
    try:
        parse_id_or_name(id_or_name)
    except ProviderInputError as exc:
        fail(exc.message, 2)
    body: dict[str, object] = {}
    for key, value in (
        ("display_name", display_name),
        ("icon", icon),
        ("enabled", enabled),
        ("base_url", base_url),
    ):
        if value is not None:
            body[key] = value
    if settings_arg is not None:
        body["settings"] = _load_settings_arg(settings_arg)
    new_keys = [*add_keys, *_read_key_file(add_key_file)]
    touches_keys = bool(new_keys or remove_keys or clear_keys)
    # Validate everything but the key set before touching the database.
    validated(
        validate_patch, body if body or not touches_keys else {"api_keys": []}, "providers update"
    )

    async def go() -> tuple[store.ProviderRecord, str]:
        async with open_store(settings) as (sessions, encryptor, url):
            await check_encryption(sessions, encryptor)
            async with sessions() as session, session.begin():
                record = await _resolve(session, encryptor, id_or_name)
                if touches_keys:
                    body["api_keys"] = _key_set(record, new_keys, remove_keys, clear_keys)
                patch = validate_patch(body, record.type)
                try:
                    change = await store.update_provider(session, encryptor, record.id, patch)
                except store.UnknownProviderKeyError as exc:
                    raise CLIFailure(f"{exc}; it was removed concurrently, try again") from exc
                store.audit_updated(session, change, actor_id=None, actor_username=CLI_ACTOR)
                await _notify(session)
            return change.after, url

    record, url = run_command(go())
    _print([record], as_json, single=True)
    tell_running_gateways(url, settings)


def _key_set(
    record: store.ProviderRecord,
    new_keys: list[str],
    remove_keys: tuple[str, ...],
    clear_keys: bool,
) -> list[dict[str, str]]:
    """The complete post-update key set for the API-shaped patch body."""
    removed: set[uuid.UUID] = set()
    for ref in remove_keys:
        wanted = ref.strip().lower()
        matches = [k.id for k in record.keys if wanted and str(k.id).startswith(wanted)]
        if len(matches) != 1:
            problem = "no key" if not matches else "more than one key"
            raise CLIFailure(
                f'provider "{record.name}" has {problem} matching id "{ref}"; see the key ids '
                f"with `aibridge providers list` (or --json for full ids)"
            )
        removed.add(matches[0])
    kept = [] if clear_keys else [k for k in record.keys if k.id not in removed]
    return [{"id": str(k.id)} for k in kept] + [{"api_key": key} for key in new_keys]


@providers.command("delete")
@click.argument("id_or_name")
@json_option
@database_option
@data_dir_option
def delete_cmd(id_or_name: str, as_json: bool, database_url: str, data_dir: str) -> None:
    """Delete provider ID_OR_NAME (soft delete: it disappears from routing and lists, its
    name becomes free again, and history is kept for the audit log)."""
    settings = settings_from_flags(database_url, data_dir)
    try:
        parse_id_or_name(id_or_name)
    except ProviderInputError as exc:
        fail(exc.message, 2)

    async def go() -> tuple[store.ProviderRecord, str]:
        async with open_store(settings) as (sessions, encryptor, url):
            await check_encryption(sessions, encryptor)
            async with sessions() as session, session.begin():
                record = await _resolve(session, encryptor, id_or_name)
                if not await store.delete_provider(session, record.id):
                    raise CLIFailure(f'provider "{id_or_name}" was deleted concurrently')
                store.audit_deleted(session, record, actor_id=None, actor_username=CLI_ACTOR)
                await _notify(session)
            return record, url

    record, url = run_command(go())
    if as_json:
        echo_json({"id": str(record.id), "name": record.name, "deleted": True})
    else:
        click.echo(f'Deleted provider "{record.name}" ({record.id}).')
    tell_running_gateways(url, settings)
