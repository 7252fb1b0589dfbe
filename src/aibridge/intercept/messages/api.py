"""Anthropic Messages (``/v1/messages``) as the pipeline sees it
(:class:`~aibridge.intercept.api.API`)."""

from __future__ import annotations

from typing import Literal

from aibridge.intercept.messages import errors, extract
from aibridge.intercept.messages.request import decode_messages_request
from aibridge.intercept.observations import Observation, StreamObserver
from aibridge.intercept.request import RequestInfo
from aibridge.intercept.sse import SSEEvent


class MessagesAPI:
    """Messages: bodies go upstream unchanged, nothing is refused or hidden."""

    __slots__ = ()

    @property
    def name(self) -> Literal["messages"]:
        """``messages``."""
        return "messages"

    def decode(self, body: bytes) -> RequestInfo:
        """See :func:`~aibridge.intercept.messages.request.decode_messages_request`."""
        return decode_messages_request(body)

    def reject(self, info: RequestInfo) -> None:
        """Every decodable request is supported."""

    def prepare_body(self, body: bytes, info: RequestInfo) -> tuple[bytes, bool]:
        """The client's body, unchanged."""
        return body, False

    def stream_observer(self) -> StreamObserver:
        """A :class:`~aibridge.intercept.messages.extract.MessagesStreamObserver`."""
        return extract.MessagesStreamObserver()

    def observe_body(self, body: bytes) -> Observation:
        """See :func:`~aibridge.intercept.messages.extract.observe_body`."""
        return extract.observe_body(body)

    def is_usage_only(self, event: SSEEvent) -> bool:
        """Never: Messages streams always carry usage."""
        return False

    def stream_error(self, message: str, kind: str) -> bytes:
        """See :func:`~aibridge.intercept.messages.errors.stream_error`."""
        return errors.stream_error(message, kind)


MESSAGES = MessagesAPI()
