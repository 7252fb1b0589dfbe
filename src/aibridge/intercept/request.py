"""Request-side partial decoding and raw-body editing.

Coding-agent request bodies are 50-500 KB, almost all of it conversation history the gateway
never looks at. So bodies are decoded with msgspec into *partial* structs that declare only
the fields the gateway needs; ``messages``/``input`` are decoded as a list of
:class:`msgspec.Raw` (validated, but not turned into Python objects), and only the last
element — where the prompt lives — is decoded further.

Edits (forcing ``stream_options.include_usage``, injecting tools) splice the top-level object
as ``dict[str, msgspec.Raw]``: the edited members are re-encoded, every other member's bytes
are copied unchanged (key order kept, new keys appended).

Shape errors in the fields the gateway relies on (``model``, ``stream``, the message list…)
raise :class:`RequestDecodeError` with a message fit for a 400. The prompt itself is read
leniently: a last message whose shape is unexpected just yields no prompt, because the
upstream, not the gateway, is the judge of conversation contents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

__all__ = [
    "Api",
    "RequestDecodeError",
    "RequestInfo",
    "decode_chat_request",
    "decode_messages_request",
    "decode_request",
    "decode_responses_request",
    "ensure_include_usage",
    "extend_array_field",
    "merge_object_field",
    "splice_fields",
]

Api = Literal["messages", "chat", "responses"]


class RequestDecodeError(ValueError):
    """The request body is not valid JSON or has the wrong shape; ``str()`` is for a 400."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the gateway needs from a request body.

    ``include_usage`` is the client's own ``stream_options.include_usage`` (Chat only; None
    when not set), so the relay knows whether to hide a usage chunk the gateway asked for.
    ``user_id`` is Anthropic ``metadata.user_id`` (Claude Code embeds its session id there).
    ``correlating_tool_call_id`` is the id of the tool call whose result the last message
    carries, linking this request to the interception that produced the call.
    ``background`` is Responses ``background`` (not supported by the gateway).
    """

    api: Api
    model: str | None
    stream: bool
    prompt: str | None = None
    include_usage: bool | None = None
    user_id: str | None = None
    correlating_tool_call_id: str | None = None
    background: bool = False


# --- partial shapes ----------------------------------------------------------------------


class _Metadata(msgspec.Struct):
    user_id: str | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _MessagesBody(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    metadata: _Metadata | None = None
    messages: list[msgspec.Raw] | None = None


class _ChatBody(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    messages: list[msgspec.Raw] | None = None


class _ResponsesBody(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    background: bool | None = None
    input: str | list[msgspec.Raw] | None = None


class _Part(msgspec.Struct):
    """A content block/part; only the members used for prompts and correlation."""

    type: Any = None
    text: Any = None
    tool_use_id: Any = None


class _Message(msgspec.Struct):
    """A message (Anthropic/Chat) or input item (Responses)."""

    role: Any = None
    type: Any = None
    content: str | list[_Part] | None = None
    tool_call_id: Any = None
    call_id: Any = None


_DECODERS: dict[Api, msgspec.json.Decoder[Any]] = {
    "messages": msgspec.json.Decoder(_MessagesBody),
    "chat": msgspec.json.Decoder(_ChatBody),
    "responses": msgspec.json.Decoder(_ResponsesBody),
}
_MESSAGE = msgspec.json.Decoder(_Message)
_TOOL_OUTPUT_TYPES = ("function_call_output", "custom_tool_call_output")

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


def _decode_top(api: Api, body: bytes) -> Any:
    if not body or body.isspace():
        raise RequestDecodeError("body is empty; expected a JSON object")
    try:
        return _DECODERS[api].decode(body)
    except msgspec.DecodeError as exc:
        raise RequestDecodeError(_friendly(exc)) from exc
    except RecursionError as exc:
        raise RequestDecodeError(TOO_DEEP) from exc


def _decode_last(items: Sequence[msgspec.Raw] | None) -> _Message | None:
    """Decode only the last message/item; None when absent or of an unexpected shape."""
    if not items:
        return None
    try:
        return _MESSAGE.decode(items[-1])
    except msgspec.DecodeError:
        return None


def _last_text(parts: list[_Part], text_type: str) -> str | None:
    for part in reversed(parts):
        if part.type == text_type and isinstance(part.text, str):
            return part.text
    return None


def decode_messages_request(body: bytes) -> RequestInfo:
    """Decode an Anthropic ``/v1/messages`` request body.

    Prompt: the last message, if its role is ``user``: its string content, or its last
    ``text`` block (Claude Code puts ``<system-reminder>`` blocks before the typed prompt).
    A message of only ``tool_result`` blocks is not a prompt; its last ``tool_use_id`` is the
    correlating tool-call id.
    """
    top: _MessagesBody = _decode_top("messages", body)
    prompt = correlating = None
    last = _decode_last(top.messages)
    if last is not None:
        content = last.content
        if last.role == "user":
            if isinstance(content, str):
                prompt = content
            elif content:
                prompt = _last_text(content, "text")
        if isinstance(content, list):
            for part in reversed(content):
                if part.type == "tool_result" and isinstance(part.tool_use_id, str):
                    correlating = part.tool_use_id
                    break
    return RequestInfo(
        api="messages",
        model=top.model,
        stream=bool(top.stream),
        prompt=prompt,
        user_id=top.metadata.user_id if top.metadata else None,
        correlating_tool_call_id=correlating,
    )


def decode_chat_request(body: bytes) -> RequestInfo:
    """Decode an OpenAI ``/v1/chat/completions`` request body.

    Prompt: the last message, if its role is ``user``: its string content or its last
    ``text`` part. A last message with role ``tool`` gives the correlating tool-call id.
    """
    top: _ChatBody = _decode_top("chat", body)
    prompt = correlating = None
    last = _decode_last(top.messages)
    if last is not None:
        if last.role == "user":
            if isinstance(last.content, str):
                prompt = last.content
            elif last.content:
                prompt = _last_text(last.content, "text")
        elif last.role == "tool" and isinstance(last.tool_call_id, str):
            correlating = last.tool_call_id
    return RequestInfo(
        api="chat",
        model=top.model,
        stream=bool(top.stream),
        prompt=prompt,
        include_usage=top.stream_options.include_usage if top.stream_options else None,
        correlating_tool_call_id=correlating,
    )


def decode_responses_request(body: bytes) -> RequestInfo:
    """Decode an OpenAI ``/v1/responses`` request body.

    Prompt: ``input`` when it is a string; otherwise the last input item, if its role is
    ``user``: its string content, or all its ``input_text`` parts joined with newlines.
    A last item of type ``function_call_output`` gives the correlating tool-call id.
    """
    top: _ResponsesBody = _decode_top("responses", body)
    prompt = correlating = None
    if isinstance(top.input, str):
        prompt = top.input
    else:
        last = _decode_last(top.input)
        if last is not None:
            if last.role == "user" and last.type in (None, "message"):
                if isinstance(last.content, str):
                    prompt = last.content
                elif last.content:
                    texts = [
                        p.text
                        for p in last.content
                        if p.type == "input_text" and isinstance(p.text, str)
                    ]
                    prompt = "\n".join(texts) if texts else None
            elif last.type in _TOOL_OUTPUT_TYPES and isinstance(last.call_id, str):
                correlating = last.call_id
    return RequestInfo(
        api="responses",
        model=top.model,
        stream=bool(top.stream),
        prompt=prompt,
        correlating_tool_call_id=correlating,
        background=bool(top.background),
    )


def decode_request(api: Api, body: bytes) -> RequestInfo:
    """Dispatch to the decoder for ``api``."""
    if api == "messages":
        return decode_messages_request(body)
    if api == "chat":
        return decode_chat_request(body)
    return decode_responses_request(body)


# --- raw-body splicing ---------------------------------------------------------------------

_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_ENCODER = msgspec.json.Encoder()


def _raw(value: Any) -> msgspec.Raw:
    """A value to splice: a ``msgspec.Raw`` is used verbatim, anything else is encoded."""
    if isinstance(value, msgspec.Raw):
        return value
    return msgspec.Raw(_ENCODER.encode(value))


def _decode_object(body: bytes | msgspec.Raw, what: str) -> dict[str, msgspec.Raw]:
    try:
        return _TOP.decode(body)
    except msgspec.DecodeError as exc:
        raise RequestDecodeError(f"{what} must be a JSON object: {exc}") from exc
    except RecursionError as exc:
        raise RequestDecodeError(TOO_DEEP) from exc


def splice_fields(
    body: bytes, set_fields: Mapping[str, Any] | None = None, remove: Iterable[str] = ()
) -> bytes:
    """Return ``body`` with top-level members set/removed; other members' bytes unchanged.

    Values may be ``msgspec.Raw`` (inserted verbatim) or JSON-encodable Python values.
    Existing keys keep their position; new keys are appended.
    """
    top = _decode_object(body, "body")
    for key in remove:
        top.pop(key, None)
    for key, value in (set_fields or {}).items():
        top[key] = _raw(value)
    return _ENCODER.encode(top)


def merge_object_field(body: bytes, name: str, values: Mapping[str, Any]) -> bytes:
    """Set members inside the top-level object ``name`` (created when absent or null)."""
    top = _decode_object(body, "body")
    current = top.get(name)
    inner: dict[str, msgspec.Raw] = {}
    if current is not None and bytes(current).strip() != b"null":
        inner = _decode_object(current, name)
    for key, value in values.items():
        inner[key] = _raw(value)
    top[name] = msgspec.Raw(_ENCODER.encode(inner))
    return _ENCODER.encode(top)


def extend_array_field(
    body: bytes, name: str, items: Sequence[Any], *, prepend: bool = False
) -> bytes:
    """Add ``items`` to the top-level array ``name`` (created when absent or null).

    ``prepend`` puts them first — Anthropic tool injection does, so the client's own tools
    keep their prompt-cache breakpoints.
    """
    top = _decode_object(body, "body")
    current = top.get(name)
    existing: list[msgspec.Raw] = []
    if current is not None and bytes(current).strip() != b"null":
        try:
            existing = _ARRAY.decode(current)
        except msgspec.DecodeError as exc:
            raise RequestDecodeError(f"{name} must be an array") from exc
    added = [_raw(item) for item in items]
    top[name] = msgspec.Raw(_ENCODER.encode(added + existing if prepend else existing + added))
    return _ENCODER.encode(top)


def ensure_include_usage(body: bytes) -> bytes:
    """Chat streaming: set ``stream_options.include_usage = true`` so usage can be recorded.

    The caller checks :attr:`RequestInfo.include_usage` first (no edit when already true) and,
    when the client did not ask for usage, hides the extra usage chunk from it.
    """
    return merge_object_field(body, "stream_options", {"include_usage": True})
