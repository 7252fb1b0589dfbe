"""Bring-your-own-key: which client credential goes upstream, shared by bridged and
passthrough routes.

A BYOK request carries the gateway key in ``X-AIBridge-Token`` and the client's own
provider key in the provider's credential header. The pooled key is never added to it,
and a gateway key (``aib-…``) is never forwarded upstream, wherever the client put it.
"""

from __future__ import annotations

from collections.abc import Mapping

from aibridge.intercept.errors import Rejection
from aibridge.intercept.upstream_headers import credential_secret, is_gateway_key
from aibridge.providers import copilot
from aibridge.providers.base import Provider
from aibridge.secrets_mask import mask_secret

BYOK_HEADER = "X-AIBridge-Token"


def byok_credential(provider: Provider, headers: Mapping[str, str]) -> str:
    """The masked hint of the client's own provider key.

    Raises :class:`~aibridge.intercept.errors.Rejection`: 403 when the provider does not
    allow BYOK (never a silent fall-back to the pooled key); 401 when no provider key, or
    only a gateway key, was sent where it belongs.
    """
    if provider.always_byok:
        return _own_token(headers)
    if not provider.options.allow_byok:
        raise Rejection(
            403,
            f"bring-your-own-key is not enabled for provider {provider.name!r}; "
            f"drop {BYOK_HEADER} or ask an admin to set settings.allow_byok",
        )
    names = [provider.auth_header]
    if provider.family == "anthropic":
        names.append("Authorization")
    gateway_key_in: str | None = None
    for name in names:
        value = headers.get(name)
        if not value or not value.strip():
            continue
        if is_gateway_key(value):
            gateway_key_in = gateway_key_in or name
            continue
        return mask_secret(credential_secret(value))
    if gateway_key_in is not None:
        raise Rejection(
            401,
            f"{gateway_key_in} carries a gateway key, which is never sent upstream: with "
            f"{BYOK_HEADER} send your own provider key in {provider.auth_header}",
        )
    raise Rejection(
        401,
        f"{BYOK_HEADER} was sent but no provider key: send your own key in {provider.auth_header}",
    )


def _own_token(headers: Mapping[str, str]) -> str:
    """The masked hint of the user's own token on an always-BYOK provider (Copilot), which
    is only ever in ``Authorization``; 401 in its absence."""
    # The reference's bearer rule: exactly "Bearer <token>" (any case), else no token; a
    # bare "Bearer" is no token, not a token spelled "Bearer".
    fields = headers.get("Authorization", "").split()
    if len(fields) != 2 or fields[0].lower() != "bearer":
        raise Rejection(401, copilot.TOKEN_REQUIRED)
    if is_gateway_key(fields[1]):
        raise Rejection(401, copilot.GATEWAY_KEY_AS_TOKEN)
    return mask_secret(fields[1])


def uses_own_credential(provider: Provider, *, byok: bool) -> bool:
    """Whether a request goes upstream with the client's own credential: it asked for BYOK,
    or the provider has no other (Copilot)."""
    return byok or provider.always_byok


def credential_hint(provider: Provider, headers: Mapping[str, str], *, byok: bool) -> str | None:
    """Which credential a bridged request goes upstream with, as a value: the masked hint of
    the client's own key (BYOK), or None for the provider's key ring.

    Raises :class:`~aibridge.intercept.errors.Rejection` when BYOK is refused (see
    :func:`byok_credential`) or when the pool has no key at all (502).
    """
    if uses_own_credential(provider, byok=byok):
        return byok_credential(provider, headers)
    if not provider.keys.has_keys:
        raise Rejection(
            502,
            f"provider {provider.name!r} has no API keys configured; an admin must add "
            f"one (PATCH /api/v1/providers/{provider.name} with api_keys)",
        )
    return None
