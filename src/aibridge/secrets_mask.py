"""Masking of secrets for logs, API responses and audit diffs."""

from __future__ import annotations


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
