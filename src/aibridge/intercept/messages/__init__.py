"""Anthropic Messages (``/v1/messages``) interception."""

from aibridge.intercept.messages.extract import MessagesStreamObserver, observe_body

__all__ = ["MessagesStreamObserver", "observe_body"]
