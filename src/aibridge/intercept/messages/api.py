"""Anthropic Messages (``/v1/messages``) as the pipeline sees it
(:class:`~aibridge.intercept.api.API`)."""

from __future__ import annotations

from typing import Final

from aibridge.intercept.messages import errors, extract
from aibridge.intercept.messages.request import decode_messages_request
from aibridge.intercept.request import accept_all, body_unchanged, never_usage_only


class MessagesAPI:
    """Messages: bodies go upstream unchanged, nothing is refused or hidden."""

    __slots__ = ()
    name: Final = "messages"
    decode = staticmethod(decode_messages_request)
    reject = staticmethod(accept_all)
    prepare_body = staticmethod(body_unchanged)
    stream_observer = staticmethod(extract.MessagesStreamObserver)
    observe_body = staticmethod(extract.observe_body)
    is_usage_only = staticmethod(never_usage_only)
    stream_error = staticmethod(errors.stream_error)


MESSAGES = MessagesAPI()
