"""Database URLs: the forms users write, mapped to the async drivers the store uses."""

from __future__ import annotations

from aibridge.secrets_mask import mask_url


def normalize_database_url(url: str) -> str:
    """Map plain ``postgresql://`` / ``sqlite://`` URLs to their async drivers."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ValueError(
        f"unsupported database URL {mask_url(url)!r}: use postgresql://… or sqlite:///path/to/file.db"
    )
