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


def mask_url(url: str) -> str:
    """Hide the password in a URL (a database URL) for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
