"""Actor headers: who an upstream interception request is for (reference §1.8).

With a provider's ``settings.send_actor_headers`` every upstream interception request (each
call of the injected-tool loop too) carries ``X-AIBridge-Actor-ID`` (the user id),
``X-AIBridge-Actor-Username`` and one ``X-AIBridge-Actor-Metadata-<Key>`` per metadata entry
(the detected client and, when known, the agent's session id). The client cannot spoof
them: every ``X-AIBridge-*`` header a client sends is dropped before the request goes
upstream (:mod:`aibridge.intercept.upstream_headers`), with the setting on or off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from urllib.parse import quote

from aibridge.actor import Actor

ACTOR_ID = "X-AIBridge-Actor-ID"
ACTOR_USERNAME = "X-AIBridge-Actor-Username"
ACTOR_METADATA_PREFIX = "X-AIBridge-Actor-Metadata-"
RESERVED_PREFIX = "x-aibridge-"
"""Header names the gateway owns (lower case): never forwarded from a client, never
accepted in ``settings.extra_headers``."""

# Printable ASCII but "%" (the escape character itself): what a header value may carry
# verbatim. Anything else (a session id taken from a request body may hold a newline or
# non-Latin text) is percent-encoded, so no value can split or corrupt the header block.
_VERBATIM = re.compile(r"[\x20-\x24\x26-\x7e]*")
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")


def header_value(value: str) -> str:
    """``value`` as a safe header value: unchanged when it is printable ASCII without
    ``%``, else percent-encoded (UTF-8)."""
    if _VERBATIM.fullmatch(value):
        return value
    return quote(value, safe=_SAFE)


def actor_metadata(client: str, session_id: str | None) -> dict[str, str]:
    """The metadata entries of one interception, by header key suffix."""
    metadata = {"Client": client}
    if session_id:
        metadata["Session-Id"] = session_id
    return metadata


def add_actor_headers(
    headers: MutableMapping[str, str], actor: Actor, metadata: Mapping[str, str]
) -> None:
    """Set the actor headers on an upstream request's ``headers`` (replacing any copy)."""
    headers[ACTOR_ID] = str(actor.user_id)
    headers[ACTOR_USERNAME] = header_value(actor.username)
    for key, value in metadata.items():
        headers[ACTOR_METADATA_PREFIX + key] = header_value(value)
