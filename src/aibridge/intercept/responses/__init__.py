"""OpenAI Responses (``/v1/responses``) interception."""

from aibridge.intercept.responses.extract import ResponsesStreamObserver, observe_body

__all__ = ["ResponsesStreamObserver", "observe_body"]
