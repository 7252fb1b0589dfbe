"""OpenAI Chat Completions (``/v1/chat/completions``) as the pipeline sees it
(:class:`~aibridge.intercept.api.API`)."""

from __future__ import annotations

from typing import Final

from aibridge.intercept.chat import errors, extract
from aibridge.intercept.chat.request import decode_chat_request, ensure_include_usage
from aibridge.intercept.request import RequestInfo, accept_all
from aibridge.intercept.sse import SSEEvent


def ask_for_usage(body: bytes, info: RequestInfo) -> tuple[bytes, bool]:
    """Ask for the final usage chunk on streams; hide it if the client did not ask."""
    if not info.stream or info.include_usage:
        return body, False
    return ensure_include_usage(body), True


def is_usage_chunk(event: SSEEvent) -> bool:
    """The extra chunk ``include_usage`` adds: empty ``choices`` plus a ``usage`` object."""
    data = event.data
    return (
        b'"usage"' in data
        and b'"choices"' in data
        and (b'"choices":[]' in data or b'"choices": []' in data)
    )


class ChatAPI:
    """Chat Completions: streams get ``stream_options.include_usage`` so usage can be
    recorded; the usage chunk is hidden from a client that did not ask for it."""

    __slots__ = ()
    name: Final = "chat"
    decode = staticmethod(decode_chat_request)
    reject = staticmethod(accept_all)
    prepare_body = staticmethod(ask_for_usage)
    stream_observer = staticmethod(extract.ChatStreamObserver)
    observe_body = staticmethod(extract.observe_body)
    is_usage_only = staticmethod(is_usage_chunk)
    stream_error = staticmethod(errors.stream_error)


CHAT = ChatAPI()
