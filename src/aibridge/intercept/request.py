"""The request body: reading it (bounded), and the partial-decoding pieces the APIs share.

Coding-agent request bodies are 50-500 KB, almost all of it conversation history the gateway
never looks at. So bodies are decoded with msgspec into *partial* structs that declare only
the fields the gateway needs; ``messages``/``input`` are decoded as a list of
:class:`msgspec.Raw` (validated, but not turned into Python objects), and only the last
element — where the prompt lives — is decoded further (:func:`decode_last`). Each API's own
body shape and decoder live with the API (``intercept/<api>/request.py``).

Shape errors in the fields the gateway relies on (``model``, ``stream``, the message list…)
raise :class:`RequestDecodeError` with a message fit for a 400. The prompt itself is read
leniently: a last message whose shape is unexpected just yields no prompt, because the
upstream, not the gateway, is the judge of conversation contents.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from aibridge.intercept.errors import Rejection
from aibridge.providers.base import APIName
from aibridge.providers.upstream import size_text

__all__ = [
    "TOO_DEEP",
    "LastMessage",
    "Part",
    "RequestDecodeError",
    "RequestInfo",
    "accept_all",
    "body_unchanged",
    "decode_last",
    "decode_object",
    "decode_top",
    "last_text",
    "never_usage_only",
    "read_body",
    "too_large_message",
]

_T = TypeVar("_T")


class RequestDecodeError(Rejection):
    """The request body is not valid JSON or has the wrong shape: a 400 whose message
    (``str()``) says what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the gateway needs from a request body.

    ``include_usage`` is the client's own ``stream_options.include_usage`` (Chat only; None
    when not set), so the relay knows whether to hide a usage chunk the gateway asked for.
    ``user_id`` is Anthropic ``metadata.user_id`` (Claude Code embeds its session id there).
    ``correlating_tool_call_id`` is the id of the tool call whose result the last message
    carries, linking this request to the interception that produced the call.
    ``background`` is Responses ``background`` (not supported by the gateway).
    ``max_output_tokens`` is the output cap the client set (Messages ``max_tokens``, Chat
    ``max_completion_tokens`` or ``max_tokens``, Responses ``max_output_tokens``; None when
    absent or not a positive whole number): the limiter reserves it.
    """

    api: APIName
    model: str | None
    stream: bool
    prompt: str | None = None
    include_usage: bool | None = None
    user_id: str | None = None
    correlating_tool_call_id: str | None = None
    background: bool = False
    max_output_tokens: int | None = None


def output_cap(*values: object) -> int | None:
    """The first of ``values`` that is a positive whole number (an output-token cap), or
    None. Decoded loosely: a malformed cap is the upstream's to refuse, not the gateway's."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# --- reading ---------------------------------------------------------------------------


def accept_all(_info: RequestInfo) -> None:
    """An API's ``reject`` when it supports every request it can decode."""


def body_unchanged(body: bytes, _info: RequestInfo) -> tuple[bytes, bool]:
    """An API's ``prepare_body`` when the client's body goes upstream as it is."""
    return body, False


def never_usage_only(_event: object) -> bool:
    """An API's ``is_usage_only`` when it never asks upstream for extra events."""
    return False


def too_large_message(limit: int) -> str:
    """The 413 message (the size in whole MiB as the reference prints it, when it is)."""
    return f"Request body too large. The maximum allowed request body size is {size_text(limit)}."


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the whole request body; past ``limit`` bytes, a 413 :class:`Rejection`."""
    if request.content_length is not None and request.content_length > limit:
        raise Rejection(413, too_large_message(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise Rejection(413, too_large_message(limit))
        chunks.append(chunk)
    return b"".join(chunks)


# --- partial shapes ----------------------------------------------------------------------


class Part(msgspec.Struct):
    """A content block/part; only the members used for prompts and correlation."""

    type: Any = None
    text: Any = None
    tool_use_id: Any = None


class LastMessage(msgspec.Struct):
    """A message (Anthropic/Chat) or input item (Responses): the members the APIs read of
    the last one."""

    role: Any = None
    type: Any = None
    content: str | list[Part] | None = None
    tool_call_id: Any = None
    call_id: Any = None


_MESSAGE = msgspec.json.Decoder(LastMessage)

# msgspec: "Expected `str | null`, got `int` - at `$.model`"
_VALIDATION_RE = re.compile(r"^Expected `([^`]*)`, got `([^`]*)`(?: - at `\$\.?([^`]*)`)?$")
_TYPE_WORDS = {
    "str": "a string",
    "bool": "a boolean",
    "int": "an integer",
    "array": "an array",
    "object": "an object",
}


def _friendly(exc: msgspec.DecodeError) -> str:
    """Turn a msgspec error into a 400 message such as ``model must be a string``."""
    msg = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return f"body is not valid JSON: {msg}"
    m = _VALIDATION_RE.match(msg)
    if m is None:
        return f"invalid request body: {msg}"
    expected, got, path = m.groups()
    wanted = [t for t in expected.split(" | ") if t != "null"]
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in wanted) or expected
    if not path:
        return f"body must be {words}, not {got}"
    return f"{path} must be {words}"


# msgspec decodes (and skips) nested values recursively and raises RecursionError at
# Python's recursion limit; no real request nests anywhere near that deep.
TOO_DEEP = (
    "body nests JSON too deeply (arrays/objects inside each other hundreds of levels "
    "deep); flatten it"
)


def decode_top(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    """``body`` decoded into an API's partial top-level shape, or a 400."""
    if not body or body.isspace():
        raise RequestDecodeError("body is empty; expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RequestDecodeError(_friendly(exc)) from exc
    except RecursionError as exc:
        raise RequestDecodeError(TOO_DEEP) from exc


def decode_last(items: Sequence[msgspec.Raw] | None) -> LastMessage | None:
    """Decode only the last message/item; None when absent or of an unexpected shape."""
    if not items:
        return None
    try:
        return _MESSAGE.decode(items[-1])
    except msgspec.DecodeError:
        return None


def last_text(parts: list[Part], text_type: str) -> str | None:
    """The text of the last part of type ``text_type``."""
    for part in reversed(parts):
        if part.type == text_type and isinstance(part.text, str):
            return part.text
    return None


_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_object(body: bytes | msgspec.Raw, what: str) -> dict[str, msgspec.Raw]:
    """A JSON object as its members' raw bytes (for edits that keep every other member's
    bytes unchanged), or a 400 naming ``what``."""
    try:
        return _TOP.decode(body)
    except msgspec.DecodeError as exc:
        raise RequestDecodeError(f"{what} must be a JSON object: {exc}") from exc
    except RecursionError as exc:
        raise RequestDecodeError(TOO_DEEP) from exc
