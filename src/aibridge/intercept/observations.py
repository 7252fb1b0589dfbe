"""What the side-channel parsers extract from upstream responses (shared by all three APIs).

The observers never change the bytes relayed to the client; they only read them and produce
these records. Token numbers follow one convention for every provider (see DESIGN.md, "Usage
accounting"): ``input`` is *uncached* input, cache reads and writes are separate, and
``reasoning`` is a breakdown of ``output`` (already included in it, never to be added).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import msgspec
import orjson

from aibridge.intercept.sse import SSEEvent

__all__ = [
    "MalformedCounter",
    "Observation",
    "StreamObserver",
    "Thought",
    "ThoughtSource",
    "TokenUsage",
    "ToolCall",
    "UpstreamError",
    "as_dict",
    "as_int",
    "as_str",
    "decode_and_apply",
    "decode_body",
    "parse_arguments",
    "uncached_usage",
]

log = logging.getLogger(__name__)

ThoughtSource = Literal["thinking", "reasoning_summary", "commentary"]

_T = TypeVar("_T")


@dataclass(slots=True)
class TokenUsage:
    """Tokens billed for one upstream call.

    ``input`` excludes cache reads and writes; ``reasoning`` is the part of ``output`` spent
    on reasoning (informational — ``output`` is the billed total); ``extra`` holds further
    provider counters (e.g. ``web_search_requests``, ``prompt_audio``) that are non-zero.
    """

    response_id: str | None
    model: str | None
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ToolCall:
    """A tool call the model made.

    ``arguments_raw`` is the argument text exactly as the model produced it; ``arguments`` is
    that text parsed as JSON, or None when it is not valid JSON (or, for free-form custom
    tools, never parsed). ``complete`` is False when the stream ended before the call was
    finished (its arguments may be truncated: never execute such a call). ``kind`` is
    ``"function"`` (client/function tools), ``"custom"`` (Responses free-form custom tools),
    ``"server"`` (Anthropic server tools such as web search) or ``"hosted"`` (Responses
    built-in tools such as ``web_search_call``).
    """

    call_id: str
    name: str
    arguments_raw: str
    arguments: object | None
    item_id: str | None = None
    response_id: str | None = None
    complete: bool = True
    kind: str = "function"

    @classmethod
    def parsed(
        cls,
        call_id: str,
        name: str,
        arguments_raw: str,
        *,
        item_id: str | None = None,
        response_id: str | None = None,
        complete: bool = True,
        kind: str = "function",
    ) -> ToolCall:
        """A call whose ``arguments`` are ``arguments_raw`` parsed as JSON (see
        :func:`parse_arguments`)."""
        return cls(
            call_id=call_id,
            name=name,
            arguments_raw=arguments_raw,
            arguments=parse_arguments(arguments_raw),
            item_id=item_id,
            response_id=response_id,
            complete=complete,
            kind=kind,
        )


@dataclass(slots=True)
class Thought:
    """Model reasoning text: Anthropic thinking, Responses reasoning summary or commentary."""

    content: str
    source: ThoughtSource


@dataclass(slots=True)
class UpstreamError:
    """An error the upstream reported inside a 200 response (an SSE error event or body)."""

    type: str
    message: str
    code: str | None = None


@dataclass(slots=True)
class Observation:
    """Everything extracted from one upstream response.

    ``usages`` has one entry per upstream call that reported usage. ``response_id`` is the
    first upstream message/response id seen (the one a prompt record is tied to), ``model``
    the model the upstream says answered, ``stop_reason`` the last stop/finish reason.
    ``completed`` is True when the stream's terminal event was seen (``message_stop``,
    ``data: [DONE]``, ``response.completed``/``incomplete``/``failed``), or for a blocking
    body that parsed. ``malformed_events`` counts events the observer could not use.
    """

    usages: list[TokenUsage] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    thoughts: list[Thought] = field(default_factory=list)
    response_id: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    error: UpstreamError | None = None
    completed: bool = False
    malformed_events: int = 0


class StreamObserver(Protocol):
    """What every per-API streaming observer provides."""

    def observe(self, event: SSEEvent) -> None:
        """Take one upstream event into account; never raises."""

    def result(self) -> Observation:
        """What was observed so far (callable at any time, e.g. after a cut stream)."""


def uncached_usage(
    response_id: str | None,
    model: str | None,
    *,
    total_input: int,
    cached: int,
    written: int,
    output: int,
    reasoning: int,
    extra: dict[str, int] | None = None,
) -> TokenUsage:
    """A :class:`TokenUsage` from OpenAI-style counters, whose input total *includes* cache
    reads and writes: uncached input = total - cached - written, clamped at 0."""
    return TokenUsage(
        response_id=response_id,
        model=model,
        input=max(total_input - cached - written, 0),
        output=output,
        cache_read=cached,
        cache_write=written,
        reasoning=reasoning,
        extra={} if extra is None else extra,
    )


def as_str(value: Any) -> str | None:
    """``value`` when it is a string, else None (upstream fields are not trusted)."""
    return value if isinstance(value, str) else None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict, else an empty dict."""
    return value if isinstance(value, dict) else {}


def as_int(value: Any) -> int | None:
    """A token counter as int, or None when absent/not a number (bools are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_arguments(raw: str) -> object | None:
    """Parse tool-call arguments JSON; None when empty or invalid (the raw text is kept)."""
    if not raw or raw.isspace():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


class MalformedCounter:
    """Counts events an observer could not use; logs the first one per stream only.

    A broken upstream can send thousands of bad events; logging each would flood the logs.
    """

    __slots__ = ("api", "count")

    def __init__(self, api: str) -> None:
        self.api = api
        self.count = 0

    def hit(self, reason: str, event: SSEEvent | None = None) -> None:
        """Record one unusable event."""
        self.count += 1
        if self.count == 1:
            name = event.event if event is not None else None
            log.warning("%s observer: unusable upstream event %r: %s", self.api, name, reason)
        else:
            log.debug("%s observer: unusable upstream event: %s", self.api, reason)


def decode_and_apply(
    event: SSEEvent,
    decode: Callable[[bytes], _T],
    apply: Callable[[_T], None],
    bad: MalformedCounter,
) -> None:
    """Decode ``event``'s data and hand it to ``apply``; never raises.

    Data that does not decode, and any exception from ``apply``, is counted in ``bad``.
    """
    try:
        parsed = decode(event.data)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than msgspec can follow.
        bad.hit(str(exc), event)
        return
    try:
        apply(parsed)
    except Exception as exc:  # a parser bug must never break the relay
        bad.hit(f"{type(exc).__name__}: {exc}", event)


def decode_body(decode: Callable[[bytes], _T], body: bytes) -> _T | None:
    """A blocking body decoded, or None when it is not what ``decode`` expects."""
    try:
        return decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
