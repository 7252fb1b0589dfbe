"""Validation of provider create/update input, shared by the admin API and the CLI.

Input is the decoded JSON body (a mapping); output is a store-level spec or patch, or
a :class:`ProviderInputError` carrying every field problem at once as plain
:class:`~aibridge.providers.settings.FieldError` values. The ``settings`` object is
parsed by :mod:`aibridge.providers.settings`, the parser the runtime uses too. The
detail strings follow the reference (coder-aibridged §4.8) so clients can match on them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aibridge import inputcheck
from aibridge.inputcheck import (
    CONTROL_CHARACTERS,
    EMPTY_PATCH,
    FieldError,
    InputError,
    URLRules,
    http_url_error,
)
from aibridge.providers.bedrock.settings import API_KEYS_REFUSED, bedrock_create_base_url
from aibridge.providers.defaults import default_base_url
from aibridge.providers.settings import parse_settings, settings_type_errors
from aibridge.store.models import PROVIDER_NAME_PATTERN, PROVIDER_TYPES, RESERVED_PROVIDER_NAMES
from aibridge.store.providers import KeyMutation, ProviderPatch, ProviderSpec

INVALID_REQUEST = "Invalid AI provider request."
INVALID_ID_OR_NAME = (
    f"Invalid provider id or name: must be a UUID or match {PROVIDER_NAME_PATTERN}."
)

CREATE_FIELDS = frozenset(
    {"type", "name", "display_name", "icon", "enabled", "base_url", "api_keys", "settings"}
)
PATCH_FIELDS = frozenset({"display_name", "icon", "enabled", "base_url", "api_keys", "settings"})

# Sane bounds: a name is a URL path segment (like a DNS label), the others are shown in
# listings and UIs.
MAX_NAME_LENGTH = 63
MAX_DISPLAY_NAME_LENGTH = 200
MAX_ICON_LENGTH = 2048
MAX_BASE_URL_LENGTH = 2048

COPILOT_KEYS_REFUSED = (
    "Copilot providers do not accept api_keys; they authenticate with each user's own "
    "GitHub Copilot token, sent in Authorization: Bearer … on every request"
)
"""Why a ``copilot`` provider refuses ``api_keys`` (on create and on update)."""


class ProviderInputError(InputError):
    """Invalid provider input: ``message`` plus zero or more field errors."""


# --- small checks ---------------------------------------------------------------------


def name_error(value: object) -> str | None:
    """Why ``value`` is not an acceptable new provider name, or None."""
    return inputcheck.name_error(
        value, PROVIDER_NAME_PATTERN, MAX_NAME_LENGTH, RESERVED_PROVIDER_NAMES
    )


_BASE_URL = URLRules(
    field="base_url",
    max_length=MAX_BASE_URL_LENGTH,
    not_absolute="base_url must be an absolute URL (e.g. https://api.example.com/)",
    credentials_hint="put upstream keys in api_keys",
    query_hint=(
        "the client's query is sent as is; use settings.api_version (azure) or "
        "settings.extra_headers instead"
    ),
)


def base_url_error(value: object) -> str | None:
    """Why ``value`` is not an acceptable upstream base URL, or None.

    Base URLs are trusted admin input (they may point at internal hosts), but one that
    carries credentials, a query or a fragment is refused rather than silently changed:
    the gateway would send the credentials as Basic auth on every request and drop the
    rest. The messages never repeat the URL (it may hold a secret).
    """
    return http_url_error(value, _BASE_URL)


def _secret_error(value: str, noun: str) -> str | None:
    if value == "":
        return f"{noun} must not be empty"
    if value != value.strip():
        return f"{noun} must not contain leading or trailing whitespace"
    if CONTROL_CHARACTERS.search(value):
        return f"{noun} must not contain control characters"
    return None


def parse_id_or_name(value: str) -> uuid.UUID | str:
    """A provider reference from a URL or command line: a UUID (canonical 36-character
    form) or a name. Raises :class:`ProviderInputError` with the reference's message."""
    parsed = inputcheck.id_or_name(value, PROVIDER_NAME_PATTERN, MAX_NAME_LENGTH)
    if parsed is None:
        raise ProviderInputError(INVALID_ID_OR_NAME)
    return parsed


# --- settings -------------------------------------------------------------------------


def _settings(
    errors: list[FieldError], value: object, provider_type: str | None
) -> dict[str, Any] | None:
    """The ``settings`` object to store (None for null or empty); problems go to ``errors``."""
    parsed = parse_settings(value, provider_type)
    if isinstance(parsed, list):
        errors.extend(parsed)
        return None
    # Stored as submitted; an empty object means "no settings", stored as NULL.
    return dict(value) if isinstance(value, dict) and value else None


# --- create / patch -------------------------------------------------------------------


def _optional_str(
    errors: list[FieldError], body: Mapping[str, object], key: str, max_length: int
) -> str | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, str):
        errors.append(FieldError(key, f"{key} must be a string"))
        return None
    if len(value) > max_length:
        errors.append(FieldError(key, f"{key} must be at most {max_length} characters"))
        return None
    if CONTROL_CHARACTERS.search(value):
        errors.append(FieldError(key, f"{key} must not contain control characters"))
        return None
    return value


def _optional_bool(errors: list[FieldError], body: Mapping[str, object], key: str) -> bool | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, bool):
        errors.append(FieldError(key, f"{key} must be a boolean (true or false)"))
        return None
    return value


def validate_create(body: Mapping[str, object]) -> ProviderSpec:
    """Validate a create request; ``enabled`` defaults to true when absent."""
    errors: list[FieldError] = []
    for key in body:
        if key not in CREATE_FIELDS:
            errors.append(FieldError(key, "unknown field"))

    ptype = body.get("type")
    if ptype is None or ptype == "":
        errors.append(FieldError("type", "type is required"))
    elif not isinstance(ptype, str):
        errors.append(FieldError("type", "type must be a string"))
    elif ptype not in PROVIDER_TYPES:
        errors.append(FieldError("type", f'unsupported provider type "{ptype}"'))

    name = body.get("name")
    problem = name_error(name)
    if problem:
        errors.append(FieldError("name", problem))

    base_url = body.get("base_url")
    if ptype == "bedrock":
        # The region's runtime endpoint when none is given (needs the settings).
        base_url, bedrock_errors = bedrock_create_base_url(body)
        errors.extend(bedrock_errors)
    elif base_url is None or base_url == "":
        # The type's default is stored on the row, so listings show where traffic goes.
        base_url = default_base_url(ptype) or base_url
    problem = base_url_error(base_url) if base_url is not None or ptype != "bedrock" else None
    if problem:
        errors.append(FieldError("base_url", problem))

    display_name = _optional_str(errors, body, "display_name", MAX_DISPLAY_NAME_LENGTH) or ""
    icon = _optional_str(errors, body, "icon", MAX_ICON_LENGTH) or ""
    enabled = _optional_bool(errors, body, "enabled")

    keys: list[str] = []
    raw_keys = body.get("api_keys")
    if raw_keys is not None:
        if not isinstance(raw_keys, list):
            errors.append(FieldError("api_keys", "api_keys must be an array of strings"))
        else:
            for i, item in enumerate(raw_keys):
                field = f"api_keys[{i}]"
                if not isinstance(item, str):
                    errors.append(FieldError(field, "api_keys entries must be strings"))
                    continue
                problem = _secret_error(item, "api_keys entries")
                if problem:
                    errors.append(FieldError(field, problem))
                else:
                    keys.append(item)
            if ptype == "copilot" and raw_keys:
                errors.append(FieldError("api_keys", COPILOT_KEYS_REFUSED))

    known_type = ptype if isinstance(ptype, str) and ptype in PROVIDER_TYPES else None
    settings = _settings(errors, body.get("settings"), known_type)

    if errors:
        raise ProviderInputError(INVALID_REQUEST, errors)
    assert isinstance(ptype, str) and isinstance(name, str)
    if not isinstance(base_url, str):
        # Only a bedrock provider may lack one here, and then its settings said why.
        raise ProviderInputError(INVALID_REQUEST, [FieldError("base_url", "base_url is required")])
    return ProviderSpec(
        type=ptype,
        name=name,
        base_url=base_url,
        display_name=display_name,
        icon=icon,
        enabled=True if enabled is None else enabled,
        api_keys=keys,
        settings=settings,
    )


def _key_mutations(errors: list[FieldError], raw: object) -> list[KeyMutation]:
    if not isinstance(raw, list):
        errors.append(
            FieldError("api_keys", 'api_keys must be an array of {"id": …} or {"api_key": …}')
        )
        return []
    mutations: list[KeyMutation] = []
    seen: dict[uuid.UUID, int] = {}
    for i, item in enumerate(raw):
        field = f"api_keys[{i}]"
        if not isinstance(item, dict):
            errors.append(FieldError(field, "exactly one of id or api_key must be set"))
            continue
        unknown = [k for k in item if k not in ("id", "api_key")]
        for k in unknown:
            errors.append(FieldError(f"{field}.{k}", "unknown field"))
        key_id, secret = item.get("id"), item.get("api_key")
        if (key_id is None) == (secret is None):
            errors.append(FieldError(field, "exactly one of id or api_key must be set"))
            continue
        if secret is not None:
            if not isinstance(secret, str):
                errors.append(FieldError(f"{field}.api_key", "api_key must be a string"))
                continue
            problem = _secret_error(secret, "api_key")
            if problem:
                errors.append(FieldError(f"{field}.api_key", problem))
                continue
            mutations.append(KeyMutation(api_key=secret))
            continue
        try:
            parsed = uuid.UUID(key_id) if isinstance(key_id, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            errors.append(FieldError(f"{field}.id", "id must be a UUID"))
            continue
        if parsed in seen:
            errors.append(
                FieldError(
                    f"{field}.id", f"id {parsed} already referenced at api_keys[{seen[parsed]}]"
                )
            )
            continue
        seen[parsed] = i
        mutations.append(KeyMutation(id=parsed))
    return mutations


def validate_patch(body: Mapping[str, object], provider_type: str | None = None) -> ProviderPatch:
    """Validate an update request (absent = unchanged; ``settings: null`` clears).

    ``provider_type`` enables the type-specific settings checks; the API passes None
    first (before the lookup) and re-checks with :func:`settings_type_errors`.
    """
    errors: list[FieldError] = []
    for key in body:
        if key == "type":
            errors.append(FieldError("type", "type cannot be changed"))
        elif key == "name":
            errors.append(
                FieldError("name", "name cannot be changed; create a new provider instead")
            )
        elif key not in PATCH_FIELDS:
            errors.append(FieldError(key, "unknown field"))
    if not body:
        raise ProviderInputError(EMPTY_PATCH)

    base_url: str | None = None
    if "base_url" in body:
        problem = base_url_error(body["base_url"])
        if problem:
            errors.append(FieldError("base_url", problem))
        else:
            base_url = str(body["base_url"])
    display_name = _optional_str(errors, body, "display_name", MAX_DISPLAY_NAME_LENGTH)
    icon = _optional_str(errors, body, "icon", MAX_ICON_LENGTH)
    enabled = _optional_bool(errors, body, "enabled")
    mutations = _key_mutations(errors, body["api_keys"]) if "api_keys" in body else None
    settings = _settings(errors, body["settings"], provider_type) if "settings" in body else None
    if provider_type == "copilot" and mutations:
        errors.append(FieldError("api_keys", COPILOT_KEYS_REFUSED))
    if errors:
        raise ProviderInputError(INVALID_REQUEST, errors)
    return ProviderPatch(
        display_name=display_name,
        icon=icon,
        enabled=enabled,
        base_url=base_url,
        settings=settings,
        settings_set="settings" in body,
        api_keys=mutations,
    )


def patch_type_errors(patch: ProviderPatch, provider_type: str) -> list[FieldError]:
    """The checks of a patch that need the provider's type, for callers that validated it
    (with :func:`validate_patch`) before looking the provider up."""
    errors: list[FieldError] = []
    if patch.settings_set:
        errors.extend(settings_type_errors(patch.settings, provider_type))
    if provider_type == "copilot" and patch.api_keys:
        errors.append(FieldError("api_keys", COPILOT_KEYS_REFUSED))
    if provider_type == "bedrock" and patch.api_keys:
        errors.append(FieldError("api_keys", API_KEYS_REFUSED))
    return errors


__all__ = [
    "COPILOT_KEYS_REFUSED",
    "EMPTY_PATCH",
    "INVALID_ID_OR_NAME",
    "INVALID_REQUEST",
    "ProviderInputError",
    "base_url_error",
    "name_error",
    "parse_id_or_name",
    "patch_type_errors",
    "validate_create",
    "validate_patch",
]
