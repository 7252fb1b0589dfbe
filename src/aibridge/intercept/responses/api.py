"""OpenAI Responses (``/v1/responses``) as the pipeline sees it
(:class:`~aibridge.intercept.api.API`)."""

from __future__ import annotations

from typing import Final

from aibridge.intercept.errors import Rejection
from aibridge.intercept.request import RequestInfo, body_unchanged, never_usage_only
from aibridge.intercept.responses import errors, extract
from aibridge.intercept.responses.request import decode_responses_request

BACKGROUND_UNSUPPORTED = 'background requests are not supported by aibridge; omit "background"'


def reject_background(info: RequestInfo) -> None:
    """A background response would outlive the request that the gateway records: 501."""
    if info.background:
        raise Rejection(501, BACKGROUND_UNSUPPORTED)


class ResponsesAPI:
    """Responses: bodies go upstream unchanged; ``background`` requests are refused (501)."""

    __slots__ = ()
    name: Final = "responses"
    decode = staticmethod(decode_responses_request)
    reject = staticmethod(reject_background)
    prepare_body = staticmethod(body_unchanged)
    stream_observer = staticmethod(extract.ResponsesStreamObserver)
    observe_body = staticmethod(extract.observe_body)
    is_usage_only = staticmethod(never_usage_only)
    stream_error = staticmethod(errors.stream_error)


RESPONSES = ResponsesAPI()
