"""Scenarios: what the fake upstream does for one request, independent of the wire format.

A :class:`Scenario` is provider-neutral. The wire modules (``anthropic``, ``openai_chat``,
``openai_responses``) turn it into each API's exact JSON bodies and SSE events.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from aibridge.fakellm.exchange import SUFFIX, Exchange, load_exchange

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random provider-style identifier, e.g. ``msg_01AbC…`` or ``call_…``.

    Not a secret, so the fast non-cryptographic generator is fine (benchmarks use the fake).
    """
    return prefix + "".join(random.choices(_ALPHABET, k=length))


class Kind(StrEnum):
    """What a scenario does. Most behaviour is further tuned by :class:`Scenario` fields."""

    TEXT = "text"
    """Plain assistant text, split into ``chunks`` deltas."""
    THINKING = "thinking"
    """Reasoning first (Anthropic thinking block with signature, Responses reasoning item with
    a summary, Chat only ``reasoning_tokens`` in usage), then text."""
    TOOL_CALL = "tool_call"
    """One client tool call (optionally preceded by ``text``)."""
    PARALLEL_TOOLS = "parallel_tools"
    """Two or more tool calls in one assistant turn."""
    CACHE = "cache"
    """Plain text with non-zero prompt-cache usage (read and, for Anthropic, write)."""
    HTTP_ERROR = "http_error"
    """Answer ``status`` with the provider's error body (and ``Retry-After`` when set)."""
    STREAM_ERROR = "stream_error"
    """Start a normal stream, send ``deltas_before`` content deltas, then an error event.
    A blocking request gets the same error as an HTTP status instead."""
    DROP = "drop"
    """Start a normal response, then close the TCP connection without a terminator."""
    STALL = "stall"
    """Start a normal stream, then wait for ``release`` (or the client to go away);
    after ``release`` is set the stream finishes normally."""
    SLOW = "slow"
    """Plain text with ``delay`` seconds between events."""
    LINGER = "linger"
    """A complete stream whose connection then stays open until ``release`` is set (or the
    client goes away), as a real upstream that closes a moment after its last event."""
    REPLAY = "replay"
    """Answer with recorded bytes (``replay_body``) verbatim, as ``status`` with
    ``replay_content_type``: a captured exchange (see :mod:`aibridge.fakellm.exchange`)."""


@dataclass(frozen=True)
class Usage:
    """Deterministic token counts for one upstream response, in provider-neutral terms.

    ``input_tokens`` is the **uncached** input, which is what the gateway must record. On the
    wire Anthropic reports it as ``input_tokens`` with separate cache fields, while OpenAI's
    ``prompt_tokens`` / ``input_tokens`` *include* ``cache_read_tokens`` (see
    :meth:`openai_input_tokens`). OpenAI has no cache-write count, so ``cache_write_tokens``
    only appears in Anthropic bodies. ``reasoning_tokens`` is part of ``output_tokens`` (as
    with both providers); Anthropic does not report it separately.
    """

    input_tokens: int = 25
    output_tokens: int = 12
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def openai_input_tokens(self) -> int:
        """``prompt_tokens`` / ``input_tokens`` as OpenAI reports them (cached included)."""
        return self.input_tokens + self.cache_read_tokens

    def total_tokens(self) -> int:
        """OpenAI's ``total_tokens``."""
        return self.openai_input_tokens() + self.output_tokens


@dataclass(frozen=True)
class ToolCall:
    """One tool call the fake model makes. ``arguments`` are sent as compact JSON text."""

    name: str
    arguments: dict[str, Any]


DEFAULT_TEXT = "Hello from fakellm! This is a scripted reply, streamed in several pieces."
DEFAULT_THINKING = "The user wants a greeting. I will answer briefly and politely."
WEATHER_CALL = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"})
TIME_CALL = ToolCall("get_time", {"timezone": "Europe/Paris", "format": "24h"})


@dataclass
class Scenario:
    """A scripted behaviour for one upstream request.

    Build one with the class-method constructors (``Scenario.text_reply()``,
    ``Scenario.tool_call()``, ``Scenario.http_error(429, retry_after="3")`` …), which set
    sensible defaults, or directly. The generated content always comes from the fields
    (``thinking``, ``text``, ``tool_calls``, ``usage``, ``delay``), so they combine freely,
    e.g. ``Scenario.tool_call(thinking="…")``; ``kind`` only changes behaviour for
    HTTP_ERROR, STREAM_ERROR, DROP and STALL and otherwise labels the scenario.

    Tests keep the object and compare ``usage`` with what the gateway recorded.
    ``stalled`` is set when a STALL scenario starts waiting (it stays set; clear it to wait
    for a later request); set ``release`` to let the stream continue. One object may serve
    several requests (``FakeLLM.default``, ``FakeLLM.key_scenarios``).
    """

    kind: Kind = Kind.TEXT
    text: str = DEFAULT_TEXT
    """Assistant text; empty means no text block (e.g. a tool call with no preamble)."""
    chunks: int = 4
    """How many deltas ``text`` (and ``thinking``) is split into."""
    thinking: str | None = None
    """Reasoning text (Anthropic thinking block, Responses reasoning summary)."""
    signature: str = "EqQBCkgIARABGAIiQFakeSignatureForFakeLLM0123456789abcdef=="
    """Signature of the Anthropic thinking block."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    arg_chunks: int = 3
    """How many partial deltas each tool call's JSON arguments are streamed in."""
    usage: Usage = field(default_factory=Usage)
    delay: float = 0.0
    """Seconds to wait before each SSE event (slow pacing)."""

    # HTTP errors (kind HTTP_ERROR) and mid-stream errors (kind STREAM_ERROR).
    status: int = 0
    error_type: str | None = None
    """Overrides the provider's error ``type`` (default depends on status and provider)."""
    error_code: str | None = None
    """Overrides the OpenAI error ``code`` / Responses error-event ``code``."""
    error_message: str | None = None
    retry_after: str | None = None
    """``Retry-After`` header value on an HTTP error."""
    responses_error_event: Literal["error", "response.failed"] = "error"
    """How a Responses stream reports a mid-stream error."""
    responses_incomplete: str | None = None
    """Set (e.g. ``"max_output_tokens"``) to end a Responses reply as ``incomplete`` with
    that reason (``response.incomplete`` in a stream), usage included."""

    # Interrupted streams (STREAM_ERROR, DROP, STALL).
    deltas_before: int = 2
    """Content deltas sent before the error / drop / stall."""
    release: asyncio.Event | None = None
    """STALL, LINGER: continue when set; when None the wait lasts until the client
    disconnects."""
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    """STALL, LINGER: set by the fake when it starts waiting."""

    # Replayed exchanges (REPLAY).
    replay_body: bytes = b""
    """The response body, sent byte for byte (an SSE body one event at a time)."""
    replay_content_type: str = ""
    """The ``Content-Type`` the body is sent with."""

    # ----------------------------------------------------------------- constructors
    @classmethod
    def text_reply(cls, text: str = DEFAULT_TEXT, **kw: Any) -> Scenario:
        """Plain text reply."""
        return cls(kind=Kind.TEXT, text=text, **kw)

    @classmethod
    def thinking_reply(
        cls, thinking: str = DEFAULT_THINKING, text: str = "The answer is 42.", **kw: Any
    ) -> Scenario:
        """Reasoning then text; usage has ``reasoning_tokens`` by default."""
        kw.setdefault("usage", Usage(input_tokens=40, output_tokens=96, reasoning_tokens=64))
        return cls(kind=Kind.THINKING, thinking=thinking, text=text, **kw)

    @classmethod
    def tool_call(
        cls, call: ToolCall = WEATHER_CALL, text: str = "Let me check that.", **kw: Any
    ) -> Scenario:
        """One client tool call, preceded by ``text`` unless it is empty."""
        kw.setdefault("usage", Usage(input_tokens=310, output_tokens=48))
        return cls(kind=Kind.TOOL_CALL, text=text, tool_calls=[call], **kw)

    @classmethod
    def parallel_tools(
        cls, calls: list[ToolCall] | None = None, text: str = "", **kw: Any
    ) -> Scenario:
        """Several tool calls in one turn (default: get_weather and get_time)."""
        calls = calls if calls is not None else [WEATHER_CALL, TIME_CALL]
        if len(calls) < 2:
            raise ValueError("parallel_tools needs at least two calls")
        kw.setdefault("usage", Usage(input_tokens=320, output_tokens=85))
        return cls(kind=Kind.PARALLEL_TOOLS, text=text, tool_calls=list(calls), **kw)

    @classmethod
    def cached(cls, **kw: Any) -> Scenario:
        """Text with prompt-cache usage (read 1800, write 200 for Anthropic)."""
        kw.setdefault(
            "usage",
            Usage(input_tokens=21, output_tokens=9, cache_read_tokens=1800, cache_write_tokens=200),
        )
        return cls(kind=Kind.CACHE, **kw)

    @classmethod
    def http_error(
        cls, status: int, *, retry_after: str | None = None, message: str | None = None, **kw: Any
    ) -> Scenario:
        """An HTTP error in the provider's shape. 429 defaults to ``Retry-After: 7``."""
        if status < 400:
            raise ValueError("http_error needs a 4xx/5xx status")
        if retry_after is None and status == 429:
            retry_after = "7"
        return cls(
            kind=Kind.HTTP_ERROR,
            status=status,
            retry_after=retry_after,
            error_message=message,
            **kw,
        )

    @classmethod
    def stream_error(cls, **kw: Any) -> Scenario:
        """Some deltas, then the provider's mid-stream error event."""
        return cls(kind=Kind.STREAM_ERROR, **kw)

    @classmethod
    def drop(cls, **kw: Any) -> Scenario:
        """Some deltas, then the connection is closed without a terminator."""
        return cls(kind=Kind.DROP, **kw)

    @classmethod
    def stall(cls, release: asyncio.Event | None = None, **kw: Any) -> Scenario:
        """Some deltas, then wait for ``release`` (or the client disconnecting)."""
        return cls(kind=Kind.STALL, release=release, **kw)

    @classmethod
    def linger(cls, release: asyncio.Event | None = None, **kw: Any) -> Scenario:
        """A complete reply, then the connection stays open until ``release`` (or the
        client leaves); ``stalled`` is set once the last event is sent."""
        return cls(kind=Kind.LINGER, release=release, **kw)

    @classmethod
    def slow(cls, delay: float = 0.2, **kw: Any) -> Scenario:
        """Text with ``delay`` seconds between events."""
        kw.setdefault("chunks", 8)
        return cls(kind=Kind.SLOW, delay=delay, **kw)

    @classmethod
    def replay(cls, body: bytes, content_type: str, status: int = 200, **kw: Any) -> Scenario:
        """Answer ``body`` byte for byte, as ``status`` with ``content_type``."""
        return cls(
            kind=Kind.REPLAY,
            replay_body=body,
            replay_content_type=content_type,
            status=status,
            **kw,
        )

    @classmethod
    def fixture(cls, exchange: Exchange | Path, **kw: Any) -> Scenario:
        """Replay the response of a captured exchange (an :class:`Exchange` or the path of
        its file)."""
        if isinstance(exchange, Path):
            exchange = load_exchange(exchange)
        return cls.replay(exchange.response, exchange.content_type, exchange.status, **kw)

    def copy(self, **changes: Any) -> Scenario:
        """A copy with some fields changed (events are shared, not copied)."""
        return replace(self, **changes)

    # ----------------------------------------------------------------- helpers
    @property
    def stop_is_tool_use(self) -> bool:
        """Whether the turn ends because of tool calls."""
        return bool(self.tool_calls)

    def text_pieces(self) -> list[str]:
        """``text`` split into ``chunks`` non-empty pieces (fewer if the text is short)."""
        return split_words(self.text, self.chunks)

    def thinking_pieces(self) -> list[str]:
        """``thinking`` split into ``chunks`` pieces."""
        return split_words(self.thinking or "", self.chunks)

    def argument_pieces(self, call: ToolCall) -> list[str]:
        """The call's JSON arguments split into ``arg_chunks`` partial strings."""
        return split_text(arguments_json(call), self.arg_chunks)


def arguments_json(call: ToolCall) -> str:
    """Compact JSON text of a call's arguments, as providers send it."""
    return json.dumps(call.arguments, separators=(",", ":"), ensure_ascii=False)


def split_text(text: str, n: int) -> list[str]:
    """Split ``text`` into at most ``n`` contiguous non-empty pieces that join back to it."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size, rest = divmod(len(text), n)
    pieces, pos = [], 0
    for i in range(n):
        end = pos + size + (1 if i < rest else 0)
        pieces.append(text[pos:end])
        pos = end
    return pieces


def split_words(text: str, n: int) -> list[str]:
    """Like :func:`split_text` but cutting between words when there are enough of them."""
    words = re.findall(r"\s*\S+\s*", text)
    if len(words) < n or "".join(words) != text:
        return split_text(text, n)
    size, rest = divmod(len(words), n)
    pieces, pos = [], 0
    for i in range(n):
        end = pos + size + (1 if i < rest else 0)
        pieces.append("".join(words[pos:end]))
        pos = end
    return pieces


# ------------------------------------------------------------------ keyword selection
KEYWORDS: dict[str, str] = {
    "text": "plain text reply",
    "thinking": "reasoning / thinking, then text",
    "tool": "one client tool call (get_weather)",
    "tools": "alias of tool",
    "parallel": "two parallel tool calls (get_weather, get_time)",
    "cache": "text with prompt-cache usage",
    "error-<status>": "HTTP error, e.g. error-429 (Retry-After), error-500, error-529",
    "stream-error": "mid-stream error event after a few deltas",
    "drop": "connection closed mid-stream without a terminator",
    "stall": "a few deltas, then silence until the client disconnects",
    "slow": "text with 0.2 s between events",
    "fixture:<api>/<name>": "replay a captured exchange file (FakeLLM(fixtures=<dir>))",
}
"""The ``scenario:<keyword>`` words understood in the last user message (for demos)."""

_KEYWORD_RE = re.compile(r"scenario:([a-z0-9-]+)", re.IGNORECASE)
# A fixture name is a folder and a file name inside ``fixtures``, nothing that climbs out.
_FIXTURE_RE = re.compile(r"scenario:fixture:([a-z]+/[A-Za-z0-9_][A-Za-z0-9_.-]*)")


def scenario_from_keyword(message: str, fixtures: Path | None = None) -> Scenario | None:
    """The scenario named by a ``scenario:<keyword>`` in ``message``, if any.

    ``scenario:fixture:<api>/<name>`` replays ``<fixtures>/<api>/<name>.txt``; when there is
    no such file (or no ``fixtures`` folder) the answer is a 400 that says so.
    """
    if (named := _FIXTURE_RE.search(message)) is not None:
        path = fixtures / f"{named.group(1)}{SUFFIX}" if fixtures is not None else None
        if path is None or not path.is_file():
            where = f"in {fixtures}" if fixtures is not None else "(no fixtures folder)"
            return Scenario.http_error(400, message=f"fakellm: no fixture {named.group(1)} {where}")
        return Scenario.fixture(path)
    m = _KEYWORD_RE.search(message)
    if not m:
        return None
    word = m.group(1).lower()
    simple: dict[str, Callable[[], Scenario]] = {
        "text": Scenario.text_reply,
        "thinking": Scenario.thinking_reply,
        "tool": Scenario.tool_call,
        "tools": Scenario.tool_call,
        "parallel": Scenario.parallel_tools,
        "cache": Scenario.cached,
        "stream-error": Scenario.stream_error,
        "drop": Scenario.drop,
        "stall": Scenario.stall,
        "slow": Scenario.slow,
    }
    if word in simple:
        return simple[word]()
    if word.startswith("error-") and word[6:].isdigit():
        status = int(word[6:])
        if 400 <= status <= 599:
            return Scenario.http_error(status)
    return None
