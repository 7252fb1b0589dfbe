"""``aibridge users limits set|show``: the limits of a user and of its keys, written
directly to the database like the rest of ``aibridge users`` (no running gateway needed).

``set`` changes only the limits whose flags are given (``--rpm none`` or ``--clear rpm``
clears one), through the same validation and PATCH semantics as the admin API
(:func:`aibridge.limits.patch_limits`), with an audit row. On PostgreSQL running
replicas hear of the change when it commits (``api_keys_changed``) and apply it at once;
a SQLite gateway applies it when its cached entry expires (``AIBRIDGE_AUTH_CACHE_TTL``).
"""

from __future__ import annotations

from typing import Any

import click

from aibridge.cli.common import (
    CLI_ACTOR,
    CLIFailure,
    data_dir_option,
    database_option,
    echo_json,
    echo_table,
    fail,
    input_failure,
    json_option,
    notify_at_commit,
    open_store,
    run_command,
    settings_from_flags,
)
from aibridge.cli.users import users
from aibridge.inputcheck import EMPTY_PATCH, FieldError, InputError
from aibridge.limits import (
    LIMIT_FIELDS,
    Budget,
    Limits,
    limits_from_json,
    parse_budget_text,
    parse_limits,
)
from aibridge.store import users as repo
from aibridge.store.audit import add_audit
from aibridge.store.pubsub import API_KEYS_CHANGED

FLAGS = {
    "requests_per_minute": "--rpm",
    "tokens_per_minute": "--tpm",
    "max_concurrent": "--concurrent",
    "allowed_models": "--models",
    "budget": "--budget",
}
"""The flag that sets each limit."""
CLEAR_NAMES = {flag.removeprefix("--"): field for field, flag in FLAGS.items()} | {
    field: field for field in LIMIT_FIELDS
}
"""What ``--clear`` accepts: a flag's name (``rpm``) or the field's (``max_concurrent``)."""
NONE = "none"
"""The value that clears a limit (``--rpm none``)."""


def _count(raw: str | None) -> object:
    """A count flag's value for the patch: None for "none", an int, or the text itself
    (which the shared validation then names as not a whole number)."""
    if raw is None or raw.strip().lower() == NONE:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return raw


def _models(raw: tuple[str, ...]) -> list[str] | None:
    """``--models`` values, each possibly comma-separated; ``none`` clears."""
    patterns = [p.strip() for value in raw for p in value.split(",") if p.strip()]
    if [p.lower() for p in patterns] == [NONE]:
        return None
    return patterns


def _budget(raw: str, errors: list[FieldError]) -> dict[str, Any] | None:
    if raw.strip().lower() == NONE:
        return None
    try:
        budget: Budget = parse_budget_text(raw)
    except InputError as exc:
        errors.append(FieldError("--budget", "; ".join(e.detail for e in exc.errors)))
        return None
    return budget.to_json()


def build_patch(
    rpm: str | None,
    tpm: str | None,
    concurrent: str | None,
    models: tuple[str, ...],
    budget: str | None,
    clear: tuple[str, ...],
) -> dict[str, Any]:
    """The admin API's ``"limits"`` patch for the flags given (only those change),
    validated.

    Raises :class:`InputError` naming the flag of every bad value, of a clear that is
    also set or an unknown ``--clear`` name; or saying that nothing would change.
    """
    errors: list[FieldError] = []
    patch: dict[str, Any] = {}
    if rpm is not None:
        patch["requests_per_minute"] = _count(rpm)
    if tpm is not None:
        patch["tokens_per_minute"] = _count(tpm)
    if concurrent is not None:
        patch["max_concurrent"] = _count(concurrent)
    if models:
        patch["allowed_models"] = _models(models)
    if budget is not None:
        patch["budget"] = _budget(budget, errors)
    for name in clear:
        field = CLEAR_NAMES.get(name.strip().lower())
        if name.strip().lower() == "all":
            # Every limit not set by a flag.
            for every in LIMIT_FIELDS:
                patch.setdefault(every, None)
        elif field is None:
            known = ", ".join([*(f.removeprefix("--") for f in FLAGS.values()), "all"])
            errors.append(FieldError("--clear", f"unknown limit {name!r}; use one of {known}"))
        elif field in patch:
            errors.append(FieldError("--clear", f"{name} is also set with {FLAGS[field]}"))
        else:
            patch[field] = None
    try:
        parse_limits(patch)
    except InputError as exc:
        errors.extend(_flag_errors(exc).errors)
    if errors:
        raise InputError("Invalid limits.", errors)
    if not patch:
        raise InputError(EMPTY_PATCH)
    return patch


def _flag_errors(exc: InputError) -> InputError:
    """``exc`` with each ``limits.FIELD…`` renamed after the flag that sets it."""
    renamed = []
    for error in exc.errors:
        field = error.field.removeprefix("limits.")
        base = field.split(".")[0].split("[")[0]
        flag = FLAGS.get(base)
        # A flag clears with "none", where the API says null.
        detail = error.detail.replace("or null for none", "or none").replace("or null", "or none")
        renamed.append(FieldError(f"{flag} ({field})" if flag else error.field, detail))
    return InputError(exc.message, renamed)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(value) if value else "(none allowed)"
    if isinstance(value, dict):
        return f"{value['amount_usd']}/{value['period']}"
    return str(value)


def _summary(limits: dict[str, Any]) -> str:
    """``rpm=60 budget=3/day`` (``-`` when nothing is set)."""
    parts = [
        f"{FLAGS[f].removeprefix('--')}={_cell(v)}" for f, v in limits.items() if v is not None
    ]
    return " ".join(parts) or "-"


@users.group("limits")
def limits_group() -> None:
    """Show or set the limits of a user or of one of its keys.

    A user's unset limits take the configured defaults (AIBRIDGE_DEFAULT_*); a key's
    limits apply on top of its user's: a request must pass both (the stricter wins).
    """


@limits_group.command("set")
@click.argument("user")
@click.option("--key", "key_id", default=None, help="Set this key's own limits, not the user's.")
@click.option("--rpm", default=None, metavar="N", help="Requests per minute (none: no limit).")
@click.option("--tpm", default=None, metavar="N", help="Tokens per minute (none: no limit).")
@click.option("--concurrent", default=None, metavar="N", help="Requests at once (none: no limit).")
@click.option(
    "--models",
    multiple=True,
    metavar="PATTERN",
    help="Allowed models: MODEL-GLOB or PROVIDER/MODEL-GLOB (claude-*, openai/gpt-5*); "
    "repeat or separate with commas; replaces the list (none: any model).",
)
@click.option(
    "--budget",
    default=None,
    metavar="AMOUNT/PERIOD",
    help="Spend limit in USD per day, week or month, e.g. 50/month (none: no budget).",
)
@click.option(
    "--clear",
    multiple=True,
    metavar="LIMIT",
    help="Clear a limit (rpm, tpm, concurrent, models, budget, or all); repeatable.",
)
@json_option
@database_option
@data_dir_option
def limits_set(
    user: str,
    key_id: str | None,
    rpm: str | None,
    tpm: str | None,
    concurrent: str | None,
    models: tuple[str, ...],
    budget: str | None,
    clear: tuple[str, ...],
    as_json: bool,
    database_url: str,
    data_dir: str,
) -> None:
    """Set limits of USER (or of its key --key ID); only the limits given change.

    \b
    Examples:
      aibridge users limits set bob --rpm 60 --budget 50/month
      aibridge users limits set bob --key 3f2a9c --models 'claude-*' --concurrent 2
      aibridge users limits set bob --clear budget --rpm none
    """
    settings = settings_from_flags(database_url, data_dir)
    command = "users limits set"
    try:
        # Bad values are told before the database is opened.
        patch = build_patch(rpm, tpm, concurrent, models, budget, clear)
    except InputError as exc:
        failure = input_failure(exc, command)
        fail(str(failure), failure.code)

    async def go() -> tuple[str, dict[str, Any], dict[str, Any]]:
        async with open_store(settings) as (sessions, _enc, _url):
            async with sessions() as session, session.begin():
                owner = await repo.get_user(session, user)
                if owner is None:
                    raise CLIFailure(f"no user {user!r}; list users with `aibridge users list`")
                try:
                    if key_id is None:
                        changes = await repo.update_user_limits(session, owner, patch)
                        limits = limits_from_json(owner.limits).to_json()
                        audit = repo.user_updated_audit(owner, {"limits": changes})
                        payload = f"user:{owner.id}"
                    else:
                        info, changes = await repo.update_key_limits(session, key_id, patch, owner)
                        limits = info.limits.to_json()
                        audit = repo.key_limits_audit(info, owner.username, changes)
                        payload = info.id
                except InputError as exc:
                    raise _flag_errors(exc) from exc
                except repo.KeyNotFound as exc:
                    raise CLIFailure(
                        f"{exc}; find key ids with `aibridge keys list --user {owner.username}`"
                    ) from exc
                if changes:
                    add_audit(session, actor_id=None, actor_username=CLI_ACTOR, **audit)
                    await notify_at_commit(session, API_KEYS_CHANGED, payload)
            return owner.username, limits, changes

    username, limits, changes = run_command(go(), command, reported=(repo.UserStoreError,))
    if as_json:
        echo_json({"user": username, "key_id": key_id, "limits": limits, "changed": changes})
        return
    whose = f"key {key_id} of user {username!r}" if key_id else f"user {username!r}"
    if changes:
        click.echo(f"Changed the limits of {whose}: {', '.join(changes)}.")
    else:
        click.echo(f"The limits of {whose} already were so; nothing changed.")
    echo_table(["limit", "value"], [[f, _cell(v)] for f, v in limits.items()])


@limits_group.command("show")
@click.argument("user")
@json_option
@database_option
@data_dir_option
def limits_show(user: str, as_json: bool, database_url: str, data_dir: str) -> None:
    """Show the limits of USER, the defaults its unset limits take, and each key's own."""
    settings = settings_from_flags(database_url, data_dir)
    defaults = settings.default_limits

    async def go() -> tuple[str, Limits, list[repo.KeyInfo]]:
        async with open_store(settings) as (sessions, _enc, _url), sessions() as session:
            owner = await repo.get_user(session, user)
            if owner is None:
                raise CLIFailure(f"no user {user!r}; list users with `aibridge users list`")
            return (
                owner.username,
                limits_from_json(owner.limits),
                await repo.list_keys(session, owner),
            )

    username, own, keys = run_command(go(), "users limits show", reported=(repo.UserStoreError,))
    effective = own.inherit(defaults)
    if as_json:
        echo_json(
            {
                "user": username,
                "limits": own.to_json(),
                "defaults": defaults.to_json(),
                "effective": effective.to_json(),
                "keys": [
                    {"id": k.id, "name": k.name, "status": k.status, "limits": k.limits.to_json()}
                    for k in keys
                ],
            }
        )
        return
    mine, default, applied = own.to_json(), defaults.to_json(), effective.to_json()
    click.echo(f"Limits of user {username!r} (unset ones take the default):")
    echo_table(
        ["limit", "user", "default", "effective"],
        [[f, _cell(mine[f]), _cell(default[f]), _cell(applied[f])] for f in LIMIT_FIELDS],
    )
    click.echo("")
    click.echo("Keys (their own limits; a request must pass the key's and the user's):")
    echo_table(
        ["id", "name", "status", "limits"],
        [[k.id, k.name or "-", k.status, _summary(k.limits.to_json())] for k in keys],
    )
