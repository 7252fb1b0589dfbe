"""Masking of secrets for logs, API responses and audit diffs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WRITE_ONLY_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "bedrock": ("secret_access_key", "session_token"),
}
"""Provider settings blocks with write-only members: shown masked, never in plaintext."""


def mask_secret(secret: str) -> str:
    """Render a secret as ``sk-…abcd``: a short prefix hint and the last four characters.

    Short secrets reveal nothing but their length class.
    """
    if not secret:
        return ""
    if len(secret) < 12:
        return "…" + "*" * 4
    prefix = secret[:3] if secret[:3].isascii() else ""
    return f"{prefix}…{secret[-4:]}"


def mask_url(url: str) -> str:
    """Hide the password in a URL (a database URL) for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def public_settings(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A provider's ``settings`` as it may be shown (admin API, audit diffs, logs): every
    write-only member (:data:`WRITE_ONLY_SETTINGS`) masked like an API key."""
    if not settings:
        return None
    shown = dict(settings)
    for block_name, fields in WRITE_ONLY_SETTINGS.items():
        block = shown.get(block_name)
        if isinstance(block, dict) and any(isinstance(block.get(f), str) for f in fields):
            block = dict(block)
            for f in fields:
                if isinstance(block.get(f), str):
                    block[f] = mask_secret(block[f])
            shown[block_name] = block
    return shown
