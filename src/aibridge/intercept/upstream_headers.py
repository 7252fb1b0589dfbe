"""Upstream request headers: the client's headers minus hop-by-hop, credential and
gateway headers, plus exactly one provider credential."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

# Never forwarded. Credentials are removed so the gateway key can't leak upstream;
# hop-by-hop and framing headers are recomputed by the HTTP client.
_DROP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Te",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Accept-Encoding",
        "Authorization",
        "X-Api-Key",
        "Api-Key",
        "Cookie",
        "Forwarded",
        "X-AIBridge-Token",
    )
)
_DROP_PREFIXES = ("x-forwarded-", "x-aibridge-")


def client_headers_for_upstream(
    headers: CIMultiDictProxy[str] | Mapping[str, str],
    *,
    keep_credentials: bool = False,
    accept_encoding: str | None = "identity",
) -> CIMultiDict[str]:
    """Sanitised copy of the client's headers.

    ``keep_credentials`` is used for bring-your-own-key requests, where the client's
    own ``Authorization`` / ``X-Api-Key`` is the upstream credential.
    ``accept_encoding="identity"`` keeps bridged responses uncompressed so the
    gateway can parse them on the side while relaying bytes unchanged.
    """
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in _DROP or low.startswith(_DROP_PREFIXES):
            if keep_credentials and low in ("authorization", "x-api-key", "api-key"):
                out.add(name, value)
            continue
        out.add(name, value)
    if accept_encoding is not None:
        out["Accept-Encoding"] = accept_encoding
    elif "Accept-Encoding" in headers:
        out["Accept-Encoding"] = headers["Accept-Encoding"]
    return out


# Response headers not copied back to the client: hop-by-hop ones (they describe the
# upstream connection, not the message) and framing the server recomputes.
_RESPONSE_DROP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "server",
        "date",
    )
)


def response_headers_for_client(
    headers: Mapping[str, str], *, decompressed: bool = False
) -> CIMultiDict[str]:
    """Upstream response headers worth relaying (request ids, rate limits, content type).

    Headers named in the upstream's ``Connection`` header are hop-by-hop too. With
    ``decompressed`` (the body was decoded by the HTTP client) ``Content-Encoding`` is
    dropped, or the client would try to decode plain bytes.
    """
    drop = set(_RESPONSE_DROP)
    getall = getattr(headers, "getall", None)
    connection = getall("Connection", []) if getall else [headers.get("Connection", "")]
    for line in connection:
        drop.update(token.strip().lower() for token in line.split(",") if token.strip())
    if decompressed:
        drop.add("content-encoding")
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out
