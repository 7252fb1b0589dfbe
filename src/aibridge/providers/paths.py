"""Request paths under a provider: checked, decoded for routing, kept as sent for upstream.

A client controls the path after ``/<provider>``. Routing on the raw text, or letting an
HTTP library normalise it later, lets ``/v1/models/%2e%2e%2fchat%2fcompletions`` or
``/v1/responses/x/../../fine_tuning/jobs`` reach any upstream path with the pooled key.
So a path is refused (a 400) when any segment is, or decodes to, a dot segment, carries
an encoded separator, a control character or a malformed escape, or is empty in the
middle (``//``). Checking the once- *and* twice-decoded forms also covers upstreams that
decode again. A path that passes has no segment an upstream could resolve upwards, so
its raw text is forwarded as the client sent it (no re-encoding, no normalisation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_to_bytes

# Characters RFC 3986 allows in a path as they are (pchar and "/"), "%" for escapes.
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
# The same without "%": a path made of these has nothing encoded.
_UNESCAPED = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
# A "%" that does not start a two-hex-digit escape.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Separators a server may honour inside a decoded segment, and control bytes.
_FORBIDDEN = re.compile(rb"[/\\\x00-\x1f\x7f]")
_SEGMENT_SAFE = "!$&'()*+,;=:@%"


class UnsafePath(ValueError):
    """The path is refused; ``str(err)`` says why and is safe to show the client."""


@dataclass(frozen=True, slots=True)
class CheckedPath:
    """A path that passed :func:`check_path`.

    ``decoded`` is what routes are matched on; ``raw`` is what goes upstream (the client's
    own bytes, only characters a request target may not carry percent-encoded).
    """

    decoded: str
    raw: str


def _check_form(form: bytes) -> None:
    if form.split(b";", 1)[0] in (b".", b".."):
        # ``..;x`` counts too: some servers (Tomcat) strip path parameters first.
        raise UnsafePath(
            'invalid request path: "." and ".." segments (also percent-encoded) are not '
            "allowed; send the resolved path"
        )
    if _FORBIDDEN.search(form):
        raise UnsafePath(
            'invalid request path: a segment contains "/", "\\" or a control character '
            "(also percent-encoded); encode identifiers without them"
        )


def _check_segment(segment: str) -> None:
    form = segment.encode("utf-8", "surrogateescape")
    _check_form(form)
    if "%" in segment:
        if _BAD_ESCAPE.search(segment):
            raise UnsafePath(
                'invalid request path: "%" must start a two-digit hex escape (send "%25")'
            )
        once = unquote_to_bytes(segment)
        _check_form(once)
        if b"%" in once:
            _check_form(unquote_to_bytes(once))


def check_path(raw: str) -> CheckedPath:
    """Check ``raw`` (a still percent-encoded path starting with ``/``) or raise
    :class:`UnsafePath`."""
    if "/." not in raw and "//" not in raw and _UNESCAPED.fullmatch(raw):
        # The common case (``/v1/messages``): nothing encoded, no dot or empty segment.
        return CheckedPath(raw, raw)
    if not raw.startswith("/"):
        raise UnsafePath("invalid request path: it must start with /")
    segments = raw[1:].split("/")
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if not segment:
            if i != last:
                raise UnsafePath('invalid request path: empty segment ("//")')
            continue
        _check_segment(segment)
    decoded = unquote(raw) if "%" in raw else raw
    if not _PLAIN.fullmatch(raw):
        # Spaces, quotes, non-ASCII …: escape them; existing escapes stay as they are.
        raw = "/".join(quote(s, safe=_SEGMENT_SAFE) for s in raw.split("/"))
    return CheckedPath(decoded, raw)


def has_dot_segment(path: str) -> bool:
    """True when a raw dot segment occurs in ``path`` (a cheap last-line guard)."""
    probe = path + "/"
    return "/./" in probe or "/../" in probe
