"""A provider's ``settings`` JSON: one parser for the admin API, the CLI and the runtime.

:func:`parse_settings` turns the stored (or submitted) object into a
:class:`ProviderSettings` value, or into every problem found as plain
:class:`FieldError` values (the admin API maps them to its envelope, the runtime refuses
to build the provider). The rules and messages follow the reference
(coder-aibridged §4.8) so clients can match on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aibridge.inputcheck import CONTROL_CHARACTERS, HEADER_NAME, FieldError
from aibridge.providers.bedrock.settings import BedrockSettings, parse_bedrock
from aibridge.providers.circuitbreaker import CircuitBreakerConfig

DEFAULT_BLOCKING_TIMEOUT = 600.0
DEFAULT_KEY_COOLDOWN = 60.0
DEFAULT_AZURE_API_VERSION = "2024-10-21"

# Headers that carry upstream credentials: those belong in api_keys (pooled, encrypted,
# masked), never in plain settings.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
# Headers the HTTP layer owns; overriding them would corrupt the upstream request.
MANAGED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)
# The gateway's own headers (actor headers among them): clients' copies are dropped, and
# settings may not set them either.
GATEWAY_HEADER_PREFIX = "x-aibridge-"
# Sanity caps of the circuit-breaker settings: the reference's counts are uint32, and an
# interval or open timeout longer than a day is a typo.
MAX_BREAKER_COUNT = 2**32 - 1
MAX_BREAKER_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """The per-provider knobs of a valid ``settings`` object (absent keys: the defaults)."""

    allow_byok: bool = False
    key_cooldown_seconds: float = DEFAULT_KEY_COOLDOWN
    upstream_timeout_seconds: float = DEFAULT_BLOCKING_TIMEOUT
    # For type=azure, the version sent when the client's query has none (with a default).
    api_version: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # None: no breaker configured (an empty object too).
    circuit_breaker: CircuitBreakerConfig | None = None
    # OpenAI Responses over WebSocket on ``/v1/responses`` (OpenAI-protocol types only).
    responses_websocket: bool = True
    # API dumps (debugging): every upstream call written under this directory (None: the
    # process default, AIBRIDGE_API_DUMP_DIR, usually off).
    api_dump_dir: str | None = None
    # X-AIBridge-Actor-* headers (user id, username, client, session) on every upstream
    # interception request (aibridge.intercept.actor_headers).
    send_actor_headers: bool = False
    # With tracing on, a W3C traceparent of the gateway's Upstream (or Passthrough) span
    # on every upstream request, so the provider's spans join the trace (a client's own
    # traceparent is never forwarded either way).
    propagate_trace_context: bool = False
    # type=bedrock only (required there): region, credentials, protocol, model map.
    bedrock: BedrockSettings | None = None


def _is_number(value: object) -> bool:
    """A finite JSON number (booleans are not numbers)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _short(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _check_bool(errors: list[FieldError], path: str, value: object) -> None:
    if not isinstance(value, bool):
        errors.append(FieldError(path, f"{_short(path)} must be a boolean"))


def _check_number(
    errors: list[FieldError],
    path: str,
    value: object,
    *,
    minimum: float,
    inclusive: bool,
    maximum: float | None = None,
) -> None:
    short = _short(path)
    if not _is_number(value):
        errors.append(FieldError(path, f"{short} must be a number"))
        return
    assert isinstance(value, int | float)
    if value < minimum or (not inclusive and value == minimum):
        op = ">=" if inclusive else ">"
        errors.append(FieldError(path, f"{short} must be {op} {minimum:g}"))
    elif maximum is not None and value > maximum:
        errors.append(FieldError(path, f"{short} must be <= {maximum:g}"))


def _check_int(
    errors: list[FieldError], path: str, value: object, *, minimum: int, maximum: int
) -> None:
    short = _short(path)
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(FieldError(path, f"{short} must be an integer"))
        return
    if value < minimum:
        errors.append(FieldError(path, f"{short} must be >= {minimum}"))
    elif value > maximum:
        errors.append(FieldError(path, f"{short} must be <= {maximum}"))


def _check_headers(errors: list[FieldError], value: object) -> None:
    path = "settings.extra_headers"
    if not isinstance(value, dict):
        errors.append(FieldError(path, "extra_headers must be an object of header name to value"))
        return
    for name, header_value in value.items():
        where = f"{path}.{name}"
        lowered = name.lower()
        if not HEADER_NAME.fullmatch(name):
            errors.append(FieldError(where, f'"{name}" is not a valid HTTP header name'))
        elif lowered in CREDENTIAL_HEADERS:
            errors.append(
                FieldError(
                    where,
                    f'header "{name}" carries credentials; put upstream keys in api_keys instead',
                )
            )
        elif lowered in MANAGED_HEADERS:
            errors.append(FieldError(where, f'header "{name}" is managed by the gateway'))
        elif lowered.startswith(GATEWAY_HEADER_PREFIX):
            errors.append(
                FieldError(
                    where,
                    f'header "{name}" is reserved for the gateway; use send_actor_headers '
                    "to send the actor upstream",
                )
            )
        if not isinstance(header_value, str):
            errors.append(FieldError(where, "header values must be strings"))
        elif CONTROL_CHARACTERS.search(header_value.replace("\t", "")):
            errors.append(FieldError(where, "header values must not contain control characters"))


def _check_breaker(errors: list[FieldError], value: object) -> None:
    path = "settings.circuit_breaker"
    if not isinstance(value, dict):
        errors.append(FieldError(path, "circuit_breaker must be an object"))
        return
    for key, item in value.items():
        where = f"{path}.{key}"
        if key == "enabled":
            _check_bool(errors, where, item)
        elif key in ("failure_threshold", "max_requests"):
            _check_int(errors, where, item, minimum=1, maximum=MAX_BREAKER_COUNT)
        elif key in ("interval_seconds", "timeout_seconds"):
            _check_number(
                errors, where, item, minimum=0, inclusive=False, maximum=MAX_BREAKER_SECONDS
            )
        else:
            errors.append(FieldError(where, "unknown setting"))


def _check_dump_dir(errors: list[FieldError], path: str, value: object) -> None:
    """An absolute directory path: a relative one would depend on where serve was
    started, and each replica would dump somewhere else."""
    if not isinstance(value, str) or not value.startswith("/"):
        errors.append(
            FieldError(path, "api_dump_dir must be an absolute directory path, e.g. /var/tmp/dumps")
        )
    elif CONTROL_CHARACTERS.search(value):
        errors.append(FieldError(path, "api_dump_dir must not contain control characters"))


def _breaker(value: Mapping[str, Any]) -> CircuitBreakerConfig | None:
    """The breaker config of a checked object; missing fields take the defaults."""
    if not value:
        return None
    defaults = CircuitBreakerConfig()
    return CircuitBreakerConfig(
        enabled=value.get("enabled", defaults.enabled),
        failure_threshold=value.get("failure_threshold", defaults.failure_threshold),
        interval_seconds=float(value.get("interval_seconds", defaults.interval_seconds)),
        timeout_seconds=float(value.get("timeout_seconds", defaults.timeout_seconds)),
        max_requests=value.get("max_requests", defaults.max_requests),
    )


def settings_type_errors(
    settings: Mapping[str, Any] | None, provider_type: str | None
) -> list[FieldError]:
    """Checks that depend on the provider type (none when the type is not known yet)."""
    if provider_type is None:
        return []
    if provider_type == "bedrock":
        return _bedrock_type_errors(settings or {})
    if not settings:
        return []
    if "api_version" in settings and provider_type != "azure":
        return [FieldError("settings.api_version", "api_version is only valid for type=azure")]
    if "responses_websocket" in settings and provider_type == "anthropic":
        return [
            FieldError(
                "settings.responses_websocket",
                "responses_websocket is only valid for OpenAI-protocol types",
            )
        ]
    if "bedrock" in settings:
        return [FieldError("settings.bedrock", "bedrock settings are only valid for type=bedrock")]
    return []


def _bedrock_type_errors(settings: Mapping[str, Any]) -> list[FieldError]:
    """A ``bedrock`` provider needs its block and has no use for the key-ring knobs."""
    errors: list[FieldError] = []
    if "bedrock" not in settings:
        errors.append(
            FieldError(
                "settings.bedrock",
                "type=bedrock requires bedrock settings (region, model, and optionally "
                "access_key_id/secret_access_key or role_arn)",
            )
        )
    if settings.get("allow_byok"):
        errors.append(
            FieldError(
                "settings.allow_byok",
                "bring-your-own-key is not available for type=bedrock (requests are signed "
                "with the provider's AWS credentials)",
            )
        )
    if "api_version" in settings:
        errors.append(
            FieldError("settings.api_version", "api_version is only valid for type=azure")
        )
    return errors


def parse_settings(value: object, provider_type: str | None) -> ProviderSettings | list[FieldError]:
    """Parse a ``settings`` value (an object or null): the settings, or every problem.

    ``provider_type`` None skips the checks that depend on the type (an update is
    checked before its provider is looked up, then again with
    :func:`settings_type_errors`). For ``azure`` a missing ``api_version`` takes
    :data:`DEFAULT_AZURE_API_VERSION`.
    """
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return [FieldError("settings", "settings must be an object or null")]
    errors: list[FieldError] = []
    for key, item in value.items():
        where = f"settings.{key}"
        if key == "allow_byok":
            _check_bool(errors, where, item)
        elif key == "key_cooldown_seconds":
            _check_number(errors, where, item, minimum=0, inclusive=True)
        elif key == "upstream_timeout_seconds":
            _check_number(errors, where, item, minimum=0, inclusive=False)
        elif key == "api_version":
            if not isinstance(item, str) or not item.strip():
                errors.append(FieldError(where, "api_version must be a non-empty string"))
        elif key == "extra_headers":
            _check_headers(errors, item)
        elif key == "circuit_breaker":
            _check_breaker(errors, item)
        elif key in ("responses_websocket", "send_actor_headers", "propagate_trace_context"):
            _check_bool(errors, where, item)
        elif key == "api_dump_dir":
            _check_dump_dir(errors, where, item)
        elif key == "bedrock":
            parsed_bedrock = parse_bedrock(item)
            if isinstance(parsed_bedrock, list):
                errors.extend(parsed_bedrock)
        else:
            errors.append(FieldError(where, "unknown setting"))
    errors.extend(settings_type_errors(value, provider_type))
    if errors:
        return errors
    api_version = value.get("api_version")
    if provider_type == "azure" and not api_version:
        api_version = DEFAULT_AZURE_API_VERSION
    return ProviderSettings(
        allow_byok=value.get("allow_byok", False),
        key_cooldown_seconds=float(value.get("key_cooldown_seconds", DEFAULT_KEY_COOLDOWN)),
        upstream_timeout_seconds=float(
            value.get("upstream_timeout_seconds", DEFAULT_BLOCKING_TIMEOUT)
        ),
        api_version=api_version,
        extra_headers=dict(value.get("extra_headers") or {}),
        circuit_breaker=_breaker(value.get("circuit_breaker") or {}),
        responses_websocket=value.get("responses_websocket", True),
        api_dump_dir=value.get("api_dump_dir"),
        send_actor_headers=value.get("send_actor_headers", False),
        propagate_trace_context=value.get("propagate_trace_context", False),
        bedrock=_bedrock_block(value.get("bedrock")),
    )


def _bedrock_block(value: object) -> BedrockSettings | None:
    """The parsed block of an already checked ``settings.bedrock`` (None when absent)."""
    if value is None:
        return None
    parsed = parse_bedrock(value)
    assert not isinstance(parsed, list)
    return parsed


__all__ = [
    "DEFAULT_AZURE_API_VERSION",
    "DEFAULT_BLOCKING_TIMEOUT",
    "FieldError",
    "ProviderSettings",
    "parse_settings",
    "settings_type_errors",
]
