"""What the interception pipeline needs from a bridged API, as a named protocol.

Each API keeps its own code in its folder (``messages/``, ``chat/``, ``responses/``): the
request decoding, the response observers and its stream error event, behind one object
that implements :class:`API`. :func:`api_for` returns it by name.
"""

from __future__ import annotations

from typing import Protocol

from aibridge.intercept.chat.api import CHAT
from aibridge.intercept.messages.api import MESSAGES
from aibridge.intercept.observations import Observation, StreamObserver
from aibridge.intercept.request import RequestInfo
from aibridge.intercept.responses.api import RESPONSES
from aibridge.intercept.sse import SSEEvent
from aibridge.providers.base import APIName


class API(Protocol):
    """One bridged API (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses)."""

    @property
    def name(self) -> APIName:
        """The API's name (metric label, route table value)."""

    def decode(self, body: bytes) -> RequestInfo:
        """The fields the gateway needs from a request body; raises
        :class:`~aibridge.intercept.request.RequestDecodeError` (a 400) on a bad shape."""

    def reject(self, info: RequestInfo) -> None:
        """Raise :class:`~aibridge.intercept.errors.Rejection` for a request the gateway
        does not support (e.g. Responses ``background``); return otherwise."""

    def prepare_body(self, body: bytes, info: RequestInfo) -> tuple[bytes, bool]:
        """The body to send upstream, and whether usage-only stream events the gateway
        asked for must be hidden from the client (see :meth:`is_usage_only`)."""

    def stream_observer(self) -> StreamObserver:
        """A fresh observer for one response stream."""

    def observe_body(self, body: bytes) -> Observation:
        """What a blocking response body says (usage, tool calls, …)."""

    def is_usage_only(self, event: SSEEvent) -> bool:
        """True for a stream event that only exists because the gateway asked for usage."""

    def stream_error(self, message: str, kind: str) -> bytes:
        """The bytes that end a stream with an error of provider error type ``kind``."""


_APIS: dict[APIName, API] = {"messages": MESSAGES, "chat": CHAT, "responses": RESPONSES}


def api_for(name: APIName) -> API:
    """The implementation of ``name``."""
    return _APIS[name]
