"""GitHub Copilot (``type: copilot``): what sets it apart from the other OpenAI-protocol types.

* **Always bring-your-own-key.** Every request carries the developer's own Copilot token in
  ``Authorization: Bearer …`` (and the gateway key in ``X-AIBridge-Token``, or the proxy's
  credentials in proxy mode); a Copilot provider has no key pool and needs no
  ``allow_byok``. The token goes upstream unchanged and is recorded only as a masked hint.
* **No ``/v1`` segment.** The Copilot API serves ``/chat/completions`` and ``/responses``
  at its root, so the gateway's routes under ``/{name}`` mirror it exactly.
* **Headers unchanged.** ``Editor-Version``, ``Copilot-Integration-Id``, ``Openai-Intent``,
  ``X-Initiator``, ``X-Request-Id`` … are what the Copilot API authorises and bills by;
  they pass through like any other client header (only credentials and gateway headers
  are ever dropped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    # Only for the annotation: base.py imports this module.
    from aibridge.providers.base import APIName

COPILOT: Final = "copilot"
"""The provider type."""

TOKEN_REQUIRED: Final = (
    "a GitHub Copilot token is required: send it in Authorization: Bearer <token> and "
    "your gateway key in X-AIBridge-Token"
)
"""The 401 a Copilot request without the user's own token gets (OpenAI error shape)."""

GATEWAY_KEY_AS_TOKEN: Final = (
    "Authorization carries a gateway key, which is never sent upstream: a GitHub Copilot "
    "token is required there, with your gateway key in X-AIBridge-Token"
)
"""The 401 when the only token sent is a gateway key (it is never forwarded)."""

# (path under /{name}, exact?, bridged API or None for passthrough), like the other
# route tables in :mod:`aibridge.providers.routes`; the longest match wins.
ROUTES: tuple[tuple[str, bool, APIName | None], ...] = (
    ("/chat/completions", True, "chat"),
    ("/responses", True, "responses"),
    ("/models", True, None),
    ("/models/", False, None),
    ("/agents/", False, None),
    ("/mcp/", False, None),
    ("/.well-known/", False, None),
)


def is_copilot(provider_type: str) -> bool:
    """True for the Copilot type (always BYOK, routes without ``/v1``)."""
    return provider_type == COPILOT


__all__ = ["COPILOT", "GATEWAY_KEY_AS_TOKEN", "ROUTES", "TOKEN_REQUIRED", "is_copilot"]
