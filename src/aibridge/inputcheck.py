"""Checks of admin input shared by every kind of configuration (providers, MCP servers):
field errors, the error that carries them, names and URLs.

A value module: the admin API and the CLI reach these through each kind's own validation
module (:mod:`aibridge.providers.validation`, :mod:`aibridge.mcp.config`), which adds
what only that kind knows. Messages never repeat a URL (it may hold a secret).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

EMPTY_PATCH = "At least one field must be provided."
"""The message of an update that changes nothing."""

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
"""ASCII control characters (never valid in a name, URL, header value or secret)."""

HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP header name (an RFC 9110 token)."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field; ``field`` is its path (``settings.extra_headers.X``)."""

    field: str
    detail: str


class InputError(Exception):
    """Invalid input: ``message`` plus zero or more field errors (all of them at once)."""

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        return f"{self.message} " + "; ".join(f"{e.field}: {e.detail}" for e in self.errors)


def name_error(
    value: object, pattern: str, max_length: int, reserved: Collection[str] = ()
) -> str | None:
    """Why ``value`` is not an acceptable name (it must fully match ``pattern``), or None."""
    if value is None or value == "":
        return "name is required"
    if not isinstance(value, str):
        return "name must be a string"
    if len(value) > max_length:
        return f"name must be at most {max_length} characters"
    if not re.fullmatch(pattern, value):
        return f"name must match {pattern} (lowercase alphanumeric, hyphens between words)"
    if value in reserved:
        return f'name "{value}" is reserved by the gateway'
    return None


@dataclass(frozen=True, slots=True)
class URLRules:
    """How one kind of URL is checked and what its messages suggest instead."""

    field: str
    """The field's name in messages (``base_url``, ``url``)."""
    max_length: int
    not_absolute: str
    """The message for a value that is not an absolute http(s) URL (with an example)."""
    credentials_hint: str
    """Where credentials go instead of ``user:password@``."""
    query_hint: str
    """What to do instead of a query string."""


def http_url_error(value: object, rules: URLRules) -> str | None:
    """Why ``value`` is not an absolute http(s) URL without credentials, query or fragment,
    or None. The gateway would send credentials in a URL as Basic auth and show the URL
    in listings and records, so they are refused rather than silently changed."""
    field = rules.field
    if value is None or value == "":
        return f"{field} is required"
    if not isinstance(value, str):
        return f"{field} must be a string"
    if len(value) > rules.max_length:
        return f"{field} must be at most {rules.max_length} characters"
    absolute = rules.not_absolute
    if CONTROL_CHARACTERS.search(value) or " " in value:
        return absolute
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return absolute
    if not parts.scheme or not parts.netloc or not host:
        return absolute
    if parts.scheme.lower() not in ("http", "https"):
        return f'{field} scheme must be http or https, got "{parts.scheme}"'
    if "@" in parts.netloc:
        return (
            f"{field} must not contain credentials (user:password@host); " + rules.credentials_hint
        )
    if "?" in value:
        return f"{field} must not have a query string (?…); {rules.query_hint}"
    if "#" in value:
        return f"{field} must not have a fragment (#…); remove it"
    return None


def id_or_name(value: str, pattern: str, max_length: int) -> uuid.UUID | str | None:
    """A reference from a URL or command line: a UUID (canonical 36-character form), a
    name (fully matching ``pattern``, at most ``max_length``), or None for neither."""
    if len(value) == 36:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    if len(value) <= max_length and re.fullmatch(pattern, value):
        return value
    return None
