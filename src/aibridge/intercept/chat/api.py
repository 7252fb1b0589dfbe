"""OpenAI Chat Completions (``/v1/chat/completions``) as the pipeline sees it
(:class:`~aibridge.intercept.api.API`)."""

from __future__ import annotations

from typing import Literal

from aibridge.intercept.chat import errors, extract
from aibridge.intercept.chat.request import decode_chat_request, ensure_include_usage
from aibridge.intercept.observations import Observation, StreamObserver
from aibridge.intercept.request import RequestInfo
from aibridge.intercept.sse import SSEEvent


class ChatAPI:
    """Chat Completions: streams get ``stream_options.include_usage`` so usage can be
    recorded; the usage chunk is hidden from a client that did not ask for it."""

    __slots__ = ()

    @property
    def name(self) -> Literal["chat"]:
        """``chat``."""
        return "chat"

    def decode(self, body: bytes) -> RequestInfo:
        """See :func:`~aibridge.intercept.chat.request.decode_chat_request`."""
        return decode_chat_request(body)

    def reject(self, info: RequestInfo) -> None:
        """Every decodable request is supported."""

    def prepare_body(self, body: bytes, info: RequestInfo) -> tuple[bytes, bool]:
        """Ask for the final usage chunk on streams; hide it if the client did not ask."""
        if not info.stream or info.include_usage:
            return body, False
        return ensure_include_usage(body), True

    def stream_observer(self) -> StreamObserver:
        """A :class:`~aibridge.intercept.chat.extract.ChatStreamObserver`."""
        return extract.ChatStreamObserver()

    def observe_body(self, body: bytes) -> Observation:
        """See :func:`~aibridge.intercept.chat.extract.observe_body`."""
        return extract.observe_body(body)

    def is_usage_only(self, event: SSEEvent) -> bool:
        """The extra chunk ``include_usage`` adds: empty ``choices`` plus a ``usage`` object."""
        data = event.data
        return (
            b'"usage"' in data
            and b'"choices"' in data
            and (b'"choices":[]' in data or b'"choices": []' in data)
        )

    def stream_error(self, message: str, kind: str) -> bytes:
        """See :func:`~aibridge.intercept.chat.errors.stream_error`."""
        return errors.stream_error(message, kind)


CHAT = ChatAPI()
