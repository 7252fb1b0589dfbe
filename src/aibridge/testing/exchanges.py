"""Captured-format exchanges in tests: what the gateway extracted from one, and what it
recorded for one, in the shape of the file's ``expect`` section.

The files and their loader belong to the fake upstream (:mod:`aibridge.fakellm.exchange`,
re-exported here), which replays them; the ``expect`` semantics are in the README next to
the files (``tests/fixtures/README.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from aibridge.fakellm.exchange import (
    Exchange,
    ExchangeFormatError,
    load_exchange,
    load_exchanges,
    parse_exchange,
)
from aibridge.intercept.api import api_for
from aibridge.intercept.observations import Observation
from aibridge.providers.base import APIName
from aibridge.testing.observe import observe_chunks
from aibridge.testing.recorded import Recorded

__all__ = [
    "Exchange",
    "ExchangeFormatError",
    "as_recorded",
    "load_exchange",
    "load_exchanges",
    "observe_exchange",
    "observed_as_expect",
    "parse_exchange",
    "recorded_as_expect",
]


def _api(exchange: Exchange) -> APIName:
    name = exchange.api
    if name not in ("messages", "chat", "responses"):
        raise ValueError(f"{exchange.name}: no bridged API is called {name!r}")
    return name  # type: ignore[return-value]


def observe_exchange(exchange: Exchange, chunks: Iterable[bytes] | None = None) -> Observation:
    """What the exchange's API observes in its response: a stream through the SSE parser
    (in ``chunks`` when given, else whole) and the stream observer, a body through the
    blocking observer."""
    api = api_for(_api(exchange))
    if not exchange.streaming:
        return api.observe_body(exchange.response)
    return observe_chunks(api.stream_observer, chunks or [exchange.response])


def observed_as_expect(obs: Observation) -> dict[str, Any]:
    """An observation in the ``expect`` shape (every key of it)."""
    return {
        "usages": [
            {
                "response_id": u.response_id,
                "model": u.model,
                "input": u.input,
                "output": u.output,
                "cache_read": u.cache_read,
                "cache_write": u.cache_write,
                "reasoning": u.reasoning,
            }
            for u in obs.usages
        ],
        "tool_calls": [
            _tool_call(c.call_id, c.item_id, c.name, c.arguments) for c in obs.tool_calls
        ],
        "thoughts": [t.content for t in obs.thoughts],
        "completed": obs.completed,
        "error": None
        if obs.error is None
        else {"type": obs.error.type, "message": obs.error.message},
    }


def recorded_as_expect(rec: Recorded) -> dict[str, Any]:
    """The rows recorded for one interception in the ``expect`` shape: ``usages``,
    ``tool_calls`` (arguments parsed) and ``thoughts``, each in :func:`as_recorded` order.
    (How the interception ended is in its own columns.)"""
    return as_recorded(
        {
            "usages": [
                {
                    "response_id": t.provider_response_id,
                    "model": t.provider_model,
                    "input": t.input_tokens,
                    "output": t.output_tokens,
                    "cache_read": t.cache_read_input_tokens,
                    "cache_write": t.cache_write_input_tokens,
                    "reasoning": t.reasoning_tokens,
                }
                for t in rec.token_usages
            ],
            "tool_calls": [
                _tool_call(t.provider_tool_call_id, t.item_id, t.tool, orjson.loads(t.input))
                for t in rec.tool_usages
            ],
            "thoughts": [t.content for t in rec.thoughts],
        }
    )


def as_recorded(expect: dict[str, Any]) -> dict[str, Any]:
    """The ``usages``, ``tool_calls`` and ``thoughts`` of ``expect`` in a fixed order: rows
    written together for one interception have no order of their own in the database."""
    return {
        "usages": sorted(
            expect["usages"], key=lambda u: orjson.dumps(u, option=orjson.OPT_SORT_KEYS)
        ),
        "tool_calls": sorted(expect["tool_calls"], key=lambda c: str(c["id"])),
        "thoughts": sorted(expect["thoughts"]),
    }


def _tool_call(call_id: Any, item_id: str | None, name: str, arguments: Any) -> dict[str, Any]:
    # ``item_id`` only exists for Responses output items: absent rather than null elsewhere.
    call: dict[str, Any] = {"id": call_id, "name": name, "arguments": arguments}
    if item_id is not None:
        call["item_id"] = item_id
    return call
