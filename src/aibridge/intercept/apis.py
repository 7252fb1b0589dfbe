"""Per-API behaviour plugged into the shared engine: request decoding, body edits,
response observers and stream error events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aibridge.intercept import chat, messages, responses
from aibridge.intercept.observations import Observation, StreamObserver
from aibridge.intercept.request import (
    RequestInfo,
    decode_chat_request,
    decode_messages_request,
    decode_responses_request,
    ensure_include_usage,
)
from aibridge.intercept.sse import (
    CHAT_DONE,
    SSEEvent,
    anthropic_error_event,
    chat_error_event,
    responses_error_event,
)


def _no_rejection(_info: RequestInfo) -> tuple[int, str] | None:
    return None


def _reject_background(info: RequestInfo) -> tuple[int, str] | None:
    if info.background:
        return 501, 'background requests are not supported by aibridge; omit "background"'
    return None


def _unchanged(body: bytes, _info: RequestInfo) -> tuple[bytes, bool]:
    return body, False


def _chat_prepare(body: bytes, info: RequestInfo) -> tuple[bytes, bool]:
    """Ask for the final usage chunk on streams; hide it if the client did not ask."""
    if not info.stream or info.include_usage:
        return body, False
    return ensure_include_usage(body), True


def _never(_event: SSEEvent) -> bool:
    return False


def _chat_usage_only(event: SSEEvent) -> bool:
    """The extra chunk ``include_usage`` adds: empty ``choices`` plus a ``usage`` object."""
    data = event.data
    return (
        b'"usage"' in data
        and b'"choices"' in data
        and (b'"choices":[]' in data or b'"choices": []' in data)
    )


def _messages_error(message: str, kind: str) -> bytes:
    return anthropic_error_event(kind, message)


def _chat_error(message: str, kind: str) -> bytes:
    return chat_error_event(message, "server_error", kind) + CHAT_DONE


def _responses_error(message: str, kind: str) -> bytes:
    return responses_error_event(message, kind)


@dataclass(frozen=True, slots=True)
class APISpec:
    """What differs between Messages, Chat Completions and Responses."""

    name: str
    decode: Callable[[bytes], RequestInfo]
    reject: Callable[[RequestInfo], tuple[int, str] | None]
    prepare_body: Callable[[bytes, RequestInfo], tuple[bytes, bool]]
    stream_observer: Callable[[], StreamObserver]
    observe_body: Callable[[bytes], Observation]
    is_usage_only: Callable[[SSEEvent], bool]
    stream_error: Callable[[str, str], bytes]


_SPECS = {
    "messages": APISpec(
        "messages",
        decode_messages_request,
        _no_rejection,
        _unchanged,
        messages.MessagesStreamObserver,
        messages.observe_body,
        _never,
        _messages_error,
    ),
    "chat": APISpec(
        "chat",
        decode_chat_request,
        _no_rejection,
        _chat_prepare,
        chat.ChatStreamObserver,
        chat.observe_body,
        _chat_usage_only,
        _chat_error,
    ),
    "responses": APISpec(
        "responses",
        decode_responses_request,
        _reject_background,
        _unchanged,
        responses.ResponsesStreamObserver,
        responses.observe_body,
        _never,
        _responses_error,
    ),
}


def spec_for(api: str) -> APISpec:
    """The spec for ``api`` (``messages``, ``chat`` or ``responses``)."""
    return _SPECS[api]
