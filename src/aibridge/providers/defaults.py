"""Default upstream base URLs per provider type.

A provider created without ``base_url`` gets its type's default *stored on the row*, so
the admin API (and every listing) shows where the traffic goes, and a later change of a
default here never silently redirects an existing provider. Types without a sensible
default (``azure``: a per-resource host; ``openai-compat``: any server) still require one.
"""

from __future__ import annotations

from types import MappingProxyType

DEFAULT_BASE_URLS = MappingProxyType(
    {
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
        "openrouter": "https://openrouter.ai/api/v1",
        # The individual-plan host; business and enterprise plans use their own hosts
        # (api.business.githubcopilot.com, api.enterprise.githubcopilot.com), set up as
        # separately named copilot providers.
        "copilot": "https://api.individual.githubcopilot.com",
        # Gemini's OpenAI-compatible endpoint (Chat Completions, models).
        "google": "https://generativelanguage.googleapis.com/v1beta/openai",
        # Vercel AI Gateway's OpenAI-compatible endpoint.
        "vercel": "https://ai-gateway.vercel.sh/v1",
    }
)
"""Provider type -> the base URL stored when a provider of that type is created without
one. OpenAI-protocol URLs carry the API version, like every OpenAI base URL here."""


def default_base_url(provider_type: object) -> str | None:
    """The default base URL of ``provider_type``, or None when it has none (or is unknown)."""
    return DEFAULT_BASE_URLS.get(provider_type) if isinstance(provider_type, str) else None


__all__ = ["DEFAULT_BASE_URLS", "default_base_url"]
