"""OpenAI Responses (``/v1/responses``) as the pipeline sees it
(:class:`~aibridge.intercept.api.API`)."""

from __future__ import annotations

from typing import Literal

from aibridge.intercept.errors import Rejection
from aibridge.intercept.observations import Observation, StreamObserver
from aibridge.intercept.request import RequestInfo
from aibridge.intercept.responses import errors, extract
from aibridge.intercept.responses.request import decode_responses_request
from aibridge.intercept.sse import SSEEvent

BACKGROUND_UNSUPPORTED = 'background requests are not supported by aibridge; omit "background"'


class ResponsesAPI:
    """Responses: bodies go upstream unchanged; ``background`` requests are refused (501)."""

    __slots__ = ()

    @property
    def name(self) -> Literal["responses"]:
        """``responses``."""
        return "responses"

    def decode(self, body: bytes) -> RequestInfo:
        """See :func:`~aibridge.intercept.responses.request.decode_responses_request`."""
        return decode_responses_request(body)

    def reject(self, info: RequestInfo) -> None:
        """A background response would outlive the request that the gateway records."""
        if info.background:
            raise Rejection(501, BACKGROUND_UNSUPPORTED)

    def prepare_body(self, body: bytes, info: RequestInfo) -> tuple[bytes, bool]:
        """The client's body, unchanged."""
        return body, False

    def stream_observer(self) -> StreamObserver:
        """A :class:`~aibridge.intercept.responses.extract.ResponsesStreamObserver`."""
        return extract.ResponsesStreamObserver()

    def observe_body(self, body: bytes) -> Observation:
        """See :func:`~aibridge.intercept.responses.extract.observe_body`."""
        return extract.observe_body(body)

    def is_usage_only(self, event: SSEEvent) -> bool:
        """Never: Responses streams always carry usage."""
        return False

    def stream_error(self, message: str, kind: str) -> bytes:
        """See :func:`~aibridge.intercept.responses.errors.stream_error`."""
        return errors.stream_error(message, kind)


RESPONSES = ResponsesAPI()
