"""OpenAI Chat Completions (``/v1/chat/completions``) interception."""

from aibridge.intercept.chat.extract import ChatStreamObserver, observe_body

__all__ = ["ChatStreamObserver", "observe_body"]
