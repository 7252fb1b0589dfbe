"""Upstream request headers: the client's headers minus hop-by-hop, credential and
gateway headers, plus exactly one provider credential."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from aibridge.httputil import HOP_BY_HOP
from aibridge.tokens import TOKEN_PREFIX

# Never forwarded. Credentials are removed so the gateway key can't leak upstream;
# hop-by-hop and framing headers are recomputed by the HTTP client.
_DROP = HOP_BY_HOP | frozenset(
    h.lower()
    for h in (
        "Host",
        "Content-Length",
        "Accept-Encoding",
        "Authorization",
        "X-Api-Key",
        "Api-Key",
        "Cookie",
        "Forwarded",
        "X-AIBridge-Token",
        # A client's trace context is never forwarded as is: the gateway's own span
        # replaces it when the provider's propagate_trace_context asks for it.
        "traceparent",
        "tracestate",
    )
)
_DROP_PREFIXES = ("x-forwarded-", "x-aibridge-")
_CREDENTIALS = frozenset(("authorization", "x-api-key", "api-key"))

_GATEWAY_KEY_PREFIX = TOKEN_PREFIX + "-"


def credential_secret(value: str) -> str:
    """The credential in a header value, without a ``Bearer`` scheme."""
    value = value.strip()
    if value[:7].lower() == "bearer ":
        return value[7:].lstrip()
    return value


def is_gateway_key(value: str) -> bool:
    """True when a credential header value (``Bearer …`` or bare) is a gateway key."""
    return credential_secret(value).startswith(_GATEWAY_KEY_PREFIX)


# What to do with a request header, by its name as sent: every request carries the same
# dozen names, so the lower-casing and set lookups are done once per spelling. Bounded,
# since the names come from clients.
_KEEP, _DROP_IT, _CREDENTIAL = 0, 1, 2
_REQUEST_KIND: dict[str, int] = {}
_KIND_CACHE_MAX = 1024


def _request_kind(name: str) -> int:
    kind = _REQUEST_KIND.get(name)
    if kind is None:
        low = name.lower()
        if low in _CREDENTIALS:
            kind = _CREDENTIAL
        elif low in _DROP or low.startswith(_DROP_PREFIXES):
            kind = _DROP_IT
        else:
            kind = _KEEP
        if len(_REQUEST_KIND) < _KIND_CACHE_MAX:
            _REQUEST_KIND[name] = kind
    return kind


def client_headers_for_upstream(
    headers: CIMultiDictProxy[str] | Mapping[str, str],
    *,
    keep_credentials: bool = False,
    accept_encoding: str | None = "identity",
) -> CIMultiDict[str]:
    """Sanitised copy of the client's headers.

    ``keep_credentials`` is used for bring-your-own-key requests, where the client's
    own ``Authorization`` / ``X-Api-Key`` is the upstream credential; a gateway key
    (``aib-…``) in one of them is dropped even then.
    ``accept_encoding="identity"`` keeps bridged responses uncompressed so the
    gateway can parse them on the side while relaying bytes unchanged.
    """
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    kind_of = _REQUEST_KIND.get
    for name, value in headers.items():
        kind = kind_of(name)
        if kind is None:
            kind = _request_kind(name)
        if kind == _KEEP or (
            kind == _CREDENTIAL and keep_credentials and not is_gateway_key(value)
        ):
            add(name, value)
    if accept_encoding is not None:
        out["Accept-Encoding"] = accept_encoding
    elif "Accept-Encoding" in headers:
        out["Accept-Encoding"] = headers["Accept-Encoding"]
    return out


# Response headers not copied back to the client: hop-by-hop ones (they describe the
# upstream connection, not the message) and framing the server recomputes.
_RESPONSE_DROP = HOP_BY_HOP | frozenset(
    (
        "content-length",
        "server",
        "date",
    )
)
_RESPONSE_DROP_DECOMPRESSED = _RESPONSE_DROP | {"content-encoding"}
# Response header name as sent -> dropped? (bounded, like _REQUEST_KIND)
_RESPONSE_KIND: dict[str, bool] = {}
_RESPONSE_KIND_DECOMPRESSED: dict[str, bool] = {}


def response_headers_for_client(
    headers: Mapping[str, str], *, decompressed: bool = False
) -> CIMultiDict[str]:
    """Upstream response headers worth relaying (request ids, rate limits, content type).

    Headers named in the upstream's ``Connection`` header are hop-by-hop too. With
    ``decompressed`` (the body was decoded by the HTTP client) ``Content-Encoding`` is
    dropped, or the client would try to decode plain bytes.
    """
    getall = getattr(headers, "getall", None)
    connection = getall("Connection", []) if getall else [headers.get("Connection", "")]
    tokens = {
        token.strip().lower() for line in connection for token in line.split(",") if token.strip()
    }
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    if tokens:
        drop = _RESPONSE_DROP_DECOMPRESSED if decompressed else _RESPONSE_DROP
        drop = drop | tokens
        for name, value in headers.items():
            if name.lower() not in drop:
                add(name, value)
        return out
    # The usual case: only the fixed names, classified once per spelling.
    kinds = _RESPONSE_KIND_DECOMPRESSED if decompressed else _RESPONSE_KIND
    for name, value in headers.items():
        dropped = kinds.get(name)
        if dropped is None:
            dropped = name.lower() in (
                _RESPONSE_DROP_DECOMPRESSED if decompressed else _RESPONSE_DROP
            )
            if len(kinds) < _KIND_CACHE_MAX:
                kinds[name] = dropped
        if not dropped:
            add(name, value)
    return out
