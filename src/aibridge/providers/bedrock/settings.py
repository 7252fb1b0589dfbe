"""``settings.bedrock``: the Amazon Bedrock block of a ``bedrock`` provider.

Parsed by :func:`parse_bedrock` into a :class:`BedrockSettings` (or every problem as
:class:`~aibridge.inputcheck.FieldError` values under ``settings.bedrock.*``). The secret
fields (``secret_access_key``, ``session_token``) are write-only: the admin API shows them
masked (:func:`aibridge.secrets_mask.public_settings`) and they are encrypted at rest with
the rest of the settings object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aibridge.inputcheck import CONTROL_CHARACTERS, FieldError
from aibridge.secrets_mask import mask_secret

__all__ = [
    "DEFAULT_SMALL_MODEL_MARKER",
    "SECRET_FIELDS",
    "BedrockSettings",
    "default_base_url",
    "parse_bedrock",
]

Protocol = Literal["invoke", "mantle"]

SECRET_FIELDS = ("secret_access_key", "session_token")
"""Write-only fields: never returned, masked in listings."""

DEFAULT_SMALL_MODEL_MARKER = "haiku"
"""Claude Code asks for its background model by a name containing this."""

_FIELDS = frozenset(
    {
        "region",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "role_arn",
        "external_id",
        "sts_endpoint",
        "protocol",
        "model",
        "small_fast_model",
        "models",
        "max_frame_bytes",
    }
)
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_ARN = re.compile(r"^arn:(aws[a-z-]*):([a-z0-9-]+):([a-z0-9-]*):(\d{12})?:(.+)$")
_ARN_EXAMPLE = "e.g. arn:aws:iam::123456789012:role/BedrockRole"
# Bedrock model ids and inference-profile ids/ARNs: no whitespace, slashes only in ARNs.
_MODEL_ID = re.compile(r"^[A-Za-z0-9._:/@+-]{1,2048}$")
_MAX_FRAME_CAP = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BedrockSettings:
    """A valid ``settings.bedrock`` block (absent fields: None or the defaults)."""

    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    sts_endpoint: str | None = None
    protocol: Protocol = "invoke"
    model: str | None = None
    small_fast_model: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    max_frame_bytes: int = 16 * 1024 * 1024

    @property
    def static_keys(self) -> bool:
        """Whether an access key pair is configured (else the AWS credential chain)."""
        return self.access_key_id is not None

    def map_model(self, client_model: str) -> str:
        """The Bedrock model id for the client's model name: the ``models`` map first, then
        ``small_fast_model`` for a name containing ``haiku``, then ``model``; the client's
        name as it is when none applies (mantle, or a map-only provider)."""
        mapped = self.models.get(client_model)
        if mapped is not None:
            return mapped
        if DEFAULT_SMALL_MODEL_MARKER in client_model.lower() and self.small_fast_model:
            return self.small_fast_model
        return self.model or client_model


def default_base_url(region: str) -> str:
    """The Bedrock runtime endpoint of ``region``."""
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def _text(errors: list[FieldError], where: str, value: object, short: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(where, f"{short} must be a non-empty string"))
        return None
    if value != value.strip() or CONTROL_CHARACTERS.search(value):
        errors.append(
            FieldError(where, f"{short} must not contain whitespace or control characters")
        )
        return None
    return value


def _role_arn_error(value: str) -> str | None:
    """The reference's messages for a role ARN that is not an IAM role's."""
    match = _ARN.fullmatch(value)
    if match is None:
        return f'role_arn "{value}" is not a valid ARN, {_ARN_EXAMPLE}'
    service, resource = match.group(2), match.group(5)
    if service != "iam":
        return f'role_arn must be an IAM ARN, but resolved to service "{service}", {_ARN_EXAMPLE}'
    if not resource.startswith("role/") or resource == "role/":
        return (
            f'role_arn must reference an IAM role, but resolved to resource "{resource}", '
            f"{_ARN_EXAMPLE}"
        )
    return None


def parse_bedrock(value: object) -> BedrockSettings | list[FieldError]:
    """Parse a ``settings.bedrock`` value: the settings, or every problem found.

    Checks that need the row (``base_url``) are in :func:`bedrock_row_errors`.
    """
    base = "settings.bedrock"
    if not isinstance(value, dict):
        return [FieldError(base, "bedrock must be an object")]
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{base}.{key}"
        if key not in _FIELDS:
            errors.append(FieldError(where, "unknown setting"))
        elif key == "protocol":
            if item not in ("invoke", "mantle"):
                errors.append(FieldError(where, 'protocol must be "invoke" or "mantle"'))
            else:
                out[key] = item
        elif key == "models":
            if not isinstance(item, dict):
                errors.append(
                    FieldError(where, "models must be an object of client model name to Bedrock id")
                )
                continue
            models: dict[str, str] = {}
            for name, target in item.items():
                if not name or not isinstance(target, str) or not _MODEL_ID.fullmatch(target):
                    errors.append(
                        FieldError(
                            f"{where}.{name}",
                            "models values must be Bedrock model ids or inference profiles "
                            "(e.g. anthropic.claude-sonnet-4-5-20250929-v1:0)",
                        )
                    )
                else:
                    models[name] = target
            out[key] = models
        elif key == "max_frame_bytes":
            if (
                not isinstance(item, int)
                or isinstance(item, bool)
                or not 16 <= item <= _MAX_FRAME_CAP
            ):
                errors.append(
                    FieldError(where, f"max_frame_bytes must be an integer in 16..{_MAX_FRAME_CAP}")
                )
            else:
                out[key] = item
        else:
            text = _text(errors, where, item, key)
            if text is None:
                continue
            if key == "region" and not _REGION.fullmatch(text):
                errors.append(
                    FieldError(where, f'region "{text}" is not an AWS region, e.g. us-east-1')
                )
            elif key in ("model", "small_fast_model") and not _MODEL_ID.fullmatch(text):
                errors.append(
                    FieldError(
                        where,
                        f"{key} must be a Bedrock model id or inference profile "
                        "(e.g. us.anthropic.claude-sonnet-4-5-20250929-v1:0)",
                    )
                )
            elif key == "role_arn" and (problem := _role_arn_error(text)):
                errors.append(FieldError(where, problem))
            elif key == "sts_endpoint" and not text.startswith(("https://", "http://")):
                errors.append(
                    FieldError(
                        where,
                        "sts_endpoint must be an http(s) URL, e.g. https://sts.us-east-1.amazonaws.com",
                    )
                )
            else:
                out[key] = text
    if ("access_key_id" in value) != ("secret_access_key" in value):
        errors.append(
            FieldError(
                f"{base}.secret_access_key"
                if "access_key_id" in value
                else f"{base}.access_key_id",
                "access_key_id and secret_access_key must be set together (or neither, to use "
                "the AWS credential chain)",
            )
        )
    if "session_token" in value and "access_key_id" not in value:
        errors.append(
            FieldError(
                f"{base}.session_token", "session_token needs access_key_id and secret_access_key"
            )
        )
    if "external_id" in value and "role_arn" not in value:
        errors.append(FieldError(f"{base}.external_id", "external_id needs role_arn"))
    if "sts_endpoint" in value and "role_arn" not in value:
        errors.append(FieldError(f"{base}.sts_endpoint", "sts_endpoint needs role_arn"))
    protocol = out.get("protocol", "invoke")
    if protocol == "invoke" and "model" not in value and not out.get("models"):
        errors.append(
            FieldError(
                f"{base}.model",
                "model is required for the invoke protocol (the Bedrock model id or inference "
                "profile requests go to)",
            )
        )
    if (
        (out.get("role_arn") or out.get("sts_endpoint"))
        and "region" not in value
        and "sts_endpoint" not in value
    ):
        errors.append(
            FieldError(f"{base}.region", "role_arn needs region (or sts_endpoint) to reach STS")
        )
    if errors:
        return errors
    return BedrockSettings(**out)


def bedrock_row_errors(settings: BedrockSettings, base_url: str | None) -> list[FieldError]:
    """Checks that need the row: a region or a base URL, and a base URL for mantle."""
    errors: list[FieldError] = []
    if not base_url and settings.region is None:
        errors.append(
            FieldError(
                "settings.bedrock.region",
                "region or base_url required: set settings.bedrock.region (the default base URL "
                "is that region's Bedrock runtime endpoint) or base_url",
            )
        )
    if settings.protocol == "mantle" and not base_url:
        errors.append(
            FieldError(
                "base_url",
                "the mantle protocol needs base_url, e.g. https://bedrock-mantle.us-east-1.api.aws/anthropic",
            )
        )
    return errors


API_KEYS_REFUSED = (
    "type=bedrock does not accept api_keys; configure access credentials via settings.bedrock "
    "(access_key_id and secret_access_key, role_arn, or the gateway's AWS credential chain)"
)


def bedrock_create_base_url(
    body: Mapping[str, object],
) -> tuple[str | None, list[FieldError]]:
    """The base URL of a new ``bedrock`` provider (the region's runtime endpoint when none
    is given, so the admin API shows where traffic goes) and the row-level problems."""
    base_url = body.get("base_url")
    settings = body.get("settings")
    block = settings.get("bedrock") if isinstance(settings, dict) else None
    parsed = parse_bedrock(block) if isinstance(block, dict) else None
    if isinstance(parsed, list) or parsed is None:
        # The settings parser reports those problems.
        return (base_url if isinstance(base_url, str) else None), []
    errors: list[FieldError] = []
    if base_url is None and parsed.region is not None and parsed.protocol == "invoke":
        base_url = default_base_url(parsed.region)
    errors.extend(bedrock_row_errors(parsed, base_url if isinstance(base_url, str) else None))
    if body.get("api_keys"):
        errors.append(FieldError("api_keys", API_KEYS_REFUSED))
    return (base_url if isinstance(base_url, str) else None), errors


def merge_write_only(new: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """A PATCH's ``settings`` with the stored write-only secrets carried over.

    The admin API never returns ``secret_access_key``/``session_token``, so a client that
    edits another field sends the block back without them (or with their masked
    rendering): for the same ``access_key_id`` the stored values are kept. A different
    key id needs its own secret.
    """
    block = new.get("bedrock")
    old = (stored or {}).get("bedrock")
    if not isinstance(block, dict) or not isinstance(old, dict):
        return dict(new)
    if block.get("access_key_id") != old.get("access_key_id") or "access_key_id" not in block:
        return dict(new)
    merged = dict(block)
    for key in ("secret_access_key", "session_token"):
        kept = old.get(key)
        if not isinstance(kept, str):
            continue
        sent = merged.get(key)
        if key not in merged or sent == mask_secret(kept):
            merged[key] = kept
    return {**new, "bedrock": merged}
