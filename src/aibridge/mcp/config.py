"""Validation of MCP server input (admin API and CLI share it) and the conversion of a
stored server into the :class:`~aibridge.mcp.settings.MCPServerSettings` the gateway runs.

Input is the decoded JSON body; output is a store spec or patch, or an
:class:`MCPInputError` carrying every field problem at once. Messages never repeat a
secret (a header value, a token) or a URL (it may hold one).

``tool_allow``/``tool_deny`` are Python regular expressions, checked here when written.
The MCP engine matches them against each *original* tool name with ``re.search``
(unanchored, like Go's ``MatchString`` in the reference; write ``^name$`` for an exact
name). Deny wins: a tool matching both is dropped; with an allow pattern a tool must
match it; with neither every tool is kept.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Literal, cast

from aibridge import inputcheck
from aibridge.inputcheck import (
    CONTROL_CHARACTERS,
    EMPTY_PATCH,
    HEADER_NAME,
    FieldError,
    InputError,
    URLRules,
    http_url_error,
)
from aibridge.mcp.settings import MCPServerSettings
from aibridge.store.mcp_servers import (
    AUTH_HEADER,
    AUTH_NONE,
    AUTH_PER_USER,
    AUTH_TYPES,
    MCPAuth,
    MCPServerPatch,
    MCPServerRecord,
    MCPServerSpec,
)
from aibridge.store.models import PROVIDER_NAME_PATTERN

INVALID_REQUEST = "Invalid MCP server request."
INVALID_CREDENTIAL = "Invalid MCP credential request."
INVALID_ID_OR_NAME = (
    f"Invalid MCP server id or name: must be a UUID or match {PROVIDER_NAME_PATTERN}."
)

CREATE_FIELDS = frozenset({"name", "url", "enabled", "tool_allow", "tool_deny", "auth"})
PATCH_FIELDS = CREATE_FIELDS
AUTH_FIELDS = {AUTH_NONE: {"type"}, AUTH_HEADER: {"type", "name", "value"}, AUTH_PER_USER: {"type"}}

# Bounds: the name is part of every injected tool name (``bmcp_<server>_<tool>``, at most
# 64 characters), the rest are stored per row and sent on every MCP request.
MAX_NAME_LENGTH = 63
MAX_URL_LENGTH = 2048
MAX_REGEX_LENGTH = 1024
MAX_HEADER_NAME_LENGTH = 256
MAX_SECRET_LENGTH = 8192
"""Longest static header value or per-user token (long JWTs fit)."""

# RFC 9110 token.
# Headers the MCP client itself sets on every request: a static header must not replace them.
MANAGED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "accept",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
    }
)


class MCPInputError(InputError):
    """Invalid MCP server input: ``message`` plus zero or more field errors."""


# --- single fields --------------------------------------------------------------------


def name_error(value: object) -> str | None:
    """Why ``value`` is not an acceptable server name (the provider name rules), or None."""
    return inputcheck.name_error(value, PROVIDER_NAME_PATTERN, MAX_NAME_LENGTH)


_URL = URLRules(
    field="url",
    max_length=MAX_URL_LENGTH,
    not_absolute="url must be an absolute http(s) URL (e.g. https://mcp.example.com/mcp)",
    credentials_hint='use auth {"type": "header", …} or {"type": "per_user"}',
    query_hint="put secrets in a header (auth)",
)


def url_error(value: object) -> str | None:
    """Why ``value`` is not an acceptable Streamable-HTTP endpoint, or None.

    Credentials, a query or a fragment are refused: the URL is shown to admins and stored
    with every injected tool call, so a secret in it would leak; static header auth is the
    place for one.
    """
    return http_url_error(value, _URL)


def compile_regex(value: str) -> re.Pattern[str]:
    """Compile a tool filter; :class:`ValueError` saying why when it cannot be compiled
    (``re.error`` is not a ``ValueError``, and a huge repeat count raises
    ``OverflowError``)."""
    try:
        return re.compile(value)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc


def _regex(errors: list[FieldError], body: Mapping[str, object], key: str) -> str | None:
    """The filter to store (None for null or ""); problems go to ``errors``."""
    value = body[key]
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.append(FieldError(key, f"{key} must be a regular expression string or null"))
        return None
    if len(value) > MAX_REGEX_LENGTH:
        errors.append(FieldError(key, f"{key} must be at most {MAX_REGEX_LENGTH} characters"))
        return None
    try:
        compile_regex(value)
    except ValueError as exc:
        errors.append(FieldError(key, f"{key} is {exc}"))
        return None
    return value


def secret_error(value: object, noun: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value (a static header value or a
    token), or None. The message never repeats the value."""
    if not isinstance(value, str):
        return f"{noun} must be a string"
    if value == "":
        return f"{noun} must not be empty"
    if len(value) > MAX_SECRET_LENGTH:
        return f"{noun} must be at most {MAX_SECRET_LENGTH} characters"
    if value != value.strip():
        return f"{noun} must not contain leading or trailing whitespace"
    if CONTROL_CHARACTERS.search(value):
        return f"{noun} must not contain control characters (line breaks, tabs, …)"
    if not value.isascii():
        return f"{noun} must be ASCII (it is sent as an HTTP header value)"
    return None


def _auth(errors: list[FieldError], value: object, *, patch: bool) -> MCPAuth | None:
    """The auth object to store; a header without value is allowed in a patch (keeps the
    current value, checked by the store)."""
    if not isinstance(value, dict):
        errors.append(
            FieldError(
                "auth",
                'auth must be {"type": "none"}, {"type": "header", "name": …, "value": …} '
                'or {"type": "per_user"}',
            )
        )
        return None
    kind = value.get("type")
    if kind not in AUTH_TYPES:
        choices = ", ".join(f'"{t}"' for t in AUTH_TYPES)
        errors.append(FieldError("auth.type", f"auth.type must be one of {choices}"))
        return None
    assert isinstance(kind, str)
    found = len(errors)
    for key in value:
        if key not in AUTH_FIELDS[kind]:
            errors.append(FieldError(f"auth.{key}", f'unknown field for auth type "{kind}"'))
    if kind != AUTH_HEADER:
        return MCPAuth(kind) if len(errors) == found else None
    name = value.get("name")
    if name is None or name == "":
        errors.append(FieldError("auth.name", "auth.name (the header name) is required"))
    elif not isinstance(name, str) or len(name) > MAX_HEADER_NAME_LENGTH:
        errors.append(
            FieldError(
                "auth.name", f"auth.name must be a string of at most {MAX_HEADER_NAME_LENGTH}"
            )
        )
    elif not HEADER_NAME.fullmatch(name):
        errors.append(FieldError("auth.name", "auth.name is not a valid HTTP header name"))
    elif name.lower() in MANAGED_HEADERS:
        errors.append(FieldError("auth.name", f'header "{name}" is set by the MCP client'))
    secret = value.get("value")
    if secret is None and patch:
        pass  # keep the current value
    elif secret is None:
        errors.append(FieldError("auth.value", "auth.value (the header value) is required"))
    else:
        problem = secret_error(secret, "auth.value")
        if problem:
            errors.append(FieldError("auth.value", problem))
    if len(errors) != found:
        return None
    assert isinstance(name, str)
    return MCPAuth(AUTH_HEADER, name, secret if isinstance(secret, str) else None)


def _bool(errors: list[FieldError], body: Mapping[str, object], key: str) -> bool | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, bool):
        errors.append(FieldError(key, f"{key} must be a boolean (true or false)"))
        return None
    return value


def _unknown(errors: list[FieldError], body: Mapping[str, object], allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            errors.append(FieldError(key, "unknown field"))


# --- create / patch -------------------------------------------------------------------


def validate_create(body: Mapping[str, object]) -> MCPServerSpec:
    """Validate a create request: ``enabled`` defaults to true, ``auth`` to none."""
    errors: list[FieldError] = []
    _unknown(errors, body, CREATE_FIELDS)
    name = body.get("name")
    if problem := name_error(name):
        errors.append(FieldError("name", problem))
    url = body.get("url")
    if problem := url_error(url):
        errors.append(FieldError("url", problem))
    enabled = _bool(errors, body, "enabled")
    allow = _regex(errors, body, "tool_allow") if "tool_allow" in body else None
    deny = _regex(errors, body, "tool_deny") if "tool_deny" in body else None
    auth = _auth(errors, body["auth"], patch=False) if "auth" in body else MCPAuth(AUTH_NONE)
    if errors:
        raise MCPInputError(INVALID_REQUEST, errors)
    assert isinstance(name, str) and isinstance(url, str) and auth is not None
    return MCPServerSpec(
        name=name,
        url=url,
        enabled=True if enabled is None else enabled,
        tool_allow=allow,
        tool_deny=deny,
        auth=auth,
    )


def validate_patch(body: Mapping[str, object]) -> MCPServerPatch:
    """Validate an update (absent = unchanged; a regex set to null or "" clears it)."""
    if not body:
        raise MCPInputError(EMPTY_PATCH)
    errors: list[FieldError] = []
    _unknown(errors, body, PATCH_FIELDS)
    name: str | None = None
    if "name" in body:
        if problem := name_error(body["name"]):
            errors.append(FieldError("name", problem))
        else:
            name = str(body["name"])
    url: str | None = None
    if "url" in body:
        if problem := url_error(body["url"]):
            errors.append(FieldError("url", problem))
        else:
            url = str(body["url"])
    enabled = _bool(errors, body, "enabled")
    allow = _regex(errors, body, "tool_allow") if "tool_allow" in body else None
    deny = _regex(errors, body, "tool_deny") if "tool_deny" in body else None
    auth = _auth(errors, body["auth"], patch=True) if "auth" in body else None
    if errors:
        raise MCPInputError(INVALID_REQUEST, errors)
    return MCPServerPatch(
        name=name,
        url=url,
        enabled=enabled,
        tool_allow=allow,
        tool_allow_set="tool_allow" in body,
        tool_deny=deny,
        tool_deny_set="tool_deny" in body,
        auth=auth,
    )


def validate_credential(body: Mapping[str, object]) -> str:
    """The token of a ``PUT …/credentials`` body ``{"token": "…"}``."""
    errors: list[FieldError] = []
    _unknown(errors, body, frozenset({"token"}))
    token = body.get("token")
    if token is None or token == "":
        errors.append(FieldError("token", "token is required"))
    elif problem := secret_error(token, "token"):
        errors.append(FieldError("token", problem))
    if errors:
        raise MCPInputError(INVALID_CREDENTIAL, errors)
    assert isinstance(token, str)
    return token


def parse_id_or_name(value: str) -> uuid.UUID | str:
    """A server reference from a URL or command line: a UUID (canonical 36-character form)
    or a name. Raises :class:`MCPInputError`."""
    parsed = inputcheck.id_or_name(value, PROVIDER_NAME_PATTERN, MAX_NAME_LENGTH)
    if parsed is None:
        raise MCPInputError(INVALID_ID_OR_NAME)
    return parsed


# --- runtime settings -----------------------------------------------------------------


def server_settings(record: MCPServerRecord) -> MCPServerSettings:
    """The runtime settings of a stored server (regexes compiled). Raises
    :class:`ValueError` for a row written around the validation: a regex that does not
    compile, an unknown auth type."""
    auth = record.auth
    if auth.type not in AUTH_TYPES:
        raise ValueError(f'unknown auth type "{auth.type}"')
    return MCPServerSettings(
        id=record.id,
        name=record.name,
        url=record.url,
        tool_allow=compile_regex(record.tool_allow) if record.tool_allow else None,
        tool_deny=compile_regex(record.tool_deny) if record.tool_deny else None,
        auth=cast(Literal["none", "header", "per_user"], auth.type),
        header_name=auth.header_name if auth.type == AUTH_HEADER else None,
        header_value=auth.header_value if auth.type == AUTH_HEADER else None,
    )


__all__ = [
    "EMPTY_PATCH",
    "INVALID_CREDENTIAL",
    "INVALID_ID_OR_NAME",
    "INVALID_REQUEST",
    "MAX_SECRET_LENGTH",
    "FieldError",
    "MCPInputError",
    "compile_regex",
    "name_error",
    "parse_id_or_name",
    "secret_error",
    "server_settings",
    "url_error",
    "validate_create",
    "validate_credential",
    "validate_patch",
]
