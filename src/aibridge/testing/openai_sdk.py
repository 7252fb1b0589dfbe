"""The official ``openai`` SDK against a test stack (Chat Completions and Responses).

Needs the ``openai`` package (the ``dev`` extra).

The tests drive the official async ``openai`` SDK twice with the same scripted scenario: once
through the gateway and once straight at the fake upstream, and compare what the SDK returns.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import openai

from aibridge.fakellm import Scenario
from aibridge.fakellm.scenario import Usage
from aibridge.testing.clients import closed_after_test
from aibridge.testing.recorded import Recorded, interceptions, recorded
from aibridge.testing.stack import PROVIDER_KEY, TIMEOUT, Stack, stack

CODEX_UA = "codex_cli_rs/0.1"

SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "text": Scenario.text_reply,
    "tool_call": Scenario.tool_call,
    "parallel_tools": Scenario.parallel_tools,
    "cached": Scenario.cached,
    "reasoning": Scenario.thinking_reply,
}
"""The parity/recording scenarios, by name."""

STATUS_ERRORS: dict[int, tuple[type[openai.APIStatusError], str]] = {
    400: (openai.BadRequestError, "bad_request"),
    500: (openai.InternalServerError, "server_error"),
    503: (openai.InternalServerError, "overloaded"),
}
"""Upstream error statuses: the SDK exception the client gets and the recorded error type."""

# Provider-generated identifiers: chat completions, tool calls, responses and their items.
_ID = re.compile(r"^(chatcmpl-|call_|resp_|rs_|msg_|fc_)[A-Za-z0-9]+$")
# Wall-clock fields the fake fills with time.time(); two requests may straddle a second.
_CLOCK_KEYS = frozenset({"created", "created_at", "completed_at"})


def gateway_sdk(
    s: Stack,
    *,
    provider: str = "openai",
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> openai.AsyncOpenAI:
    """The SDK pointed at the gateway with the member's key (no retries)."""
    return closed_after_test(
        openai.AsyncOpenAI(
            base_url=f"{s.base}/{provider}/v1",
            api_key=api_key if api_key is not None else s.user_token,
            max_retries=0,
            timeout=TIMEOUT,
            default_headers=dict(headers or {}),
        )
    )


def direct_sdk(s: Stack) -> openai.AsyncOpenAI:
    """The SDK pointed straight at the fake upstream with the provider key."""
    return closed_after_test(
        openai.AsyncOpenAI(
            base_url=s.fake.openai_url, api_key=PROVIDER_KEY, max_retries=0, timeout=TIMEOUT
        )
    )


def normalize(value: Any, ids: dict[str, str] | None = None) -> Any:
    """``value`` with provider ids replaced by ``<id N>`` (numbered by first appearance, so
    which fields share an id is still compared) and wall-clock fields by ``<time>``."""
    ids = {} if ids is None else ids
    if isinstance(value, dict):
        return {
            k: "<time>" if k in _CLOCK_KEYS and isinstance(v, int | float) else normalize(v, ids)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalize(v, ids) for v in value]
    if isinstance(value, str) and _ID.match(value):
        return ids.setdefault(value, f"<id {len(ids)}>")
    return value


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """Split an LF-framed SSE body into ``(event name, data)`` pairs."""
    out: list[tuple[str | None, bytes]] = []
    for block in raw.split(b"\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data.append(line[6:])
        out.append((name, b"\n".join(data)))
    return out


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound but never listening, so nothing else
    can take it while the test runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def header_values(headers: Mapping[str, str]) -> list[str]:
    """Every header value (for "the gateway key never reaches upstream" checks)."""
    return [str(v) for v in headers.values()]


async def admin_get(s: Stack, path: str) -> Any:
    """GET an admin API path as the admin and return the JSON body (asserting 200)."""
    resp = await s.client.get(path, headers=s.admin_headers())
    assert resp.status == 200, await resp.text()
    return await resp.json()


@asynccontextmanager
async def openai_stack(
    db_url: str, tmp_path: Path, *scripted: Scenario, **kwargs: Any
) -> AsyncIterator[Stack]:
    """:func:`~aibridge.testing.stack.stack` (``kwargs`` go to it) with the default OpenAI
    provider, its upstream answering the next requests with ``scripted``, in order."""
    async with stack(db_url, tmp_path, **kwargs) as s:
        await s.add_provider("openai", "openai")
        s.fake.enqueue(*scripted)
        yield s


async def collect(stream: Any) -> list[dict[str, Any]]:
    """Drain an SDK chunk/event stream into plain dicts."""
    return [item.model_dump() async for item in stream]


async def nth_recording(s: Stack, n: int, model: str) -> Recorded:
    """Flush the recorder, check there are exactly ``n`` interceptions (one per request so
    far) and return the full recording of the one for ``model``."""
    await s.flush_records()
    rows = await interceptions(s.services)
    assert len(rows) == n, "each request is exactly one interception"
    (row,) = [r for r in rows if r.model == model]
    return await recorded(s.services, row.id)


def assert_codex_interception(
    rec: Recorded, model: str, initiator: uuid.UUID, session: str
) -> None:
    """A finished, error-free OpenAI interception by ``initiator`` from Codex in ``session``."""
    i = rec.interception
    assert (i.provider, i.provider_name, i.model) == ("openai", "openai", model)
    assert i.initiator_id == initiator
    assert (i.client, i.client_session_id, i.user_agent) == ("Codex", session, CODEX_UA)
    assert i.ended_at is not None
    assert (i.error_type, i.error_message) == (None, None)


UsageRow = tuple[int, int, int, int, int, str | None]
"""A token usage row as (input, output, cache read, cache write, reasoning, response id)."""


def usage_rows(rec: Recorded) -> list[UsageRow]:
    """The token usage rows recorded for an interception, as :data:`UsageRow` values."""
    return [
        (
            t.input_tokens,
            t.output_tokens,
            t.cache_read_input_tokens,
            t.cache_write_input_tokens,
            t.reasoning_tokens,
            t.provider_response_id,
        )
        for t in rec.token_usages
    ]


def usage_row(u: Usage, response_id: str | None) -> UsageRow:
    """The row an OpenAI answer with a scenario's usage ``u`` must be recorded as (uncached
    input; OpenAI reports no cache writes)."""
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        0,
        u.reasoning_tokens,
        response_id,
    )


def admin_tokens(u: Usage) -> dict[str, int]:
    """The admin API's ``tokens`` for a scenario's usage (OpenAI reports no cache writes)."""
    return {
        "input": u.input_tokens,
        "output": u.output_tokens,
        "cache_read": u.cache_read_tokens,
        "cache_write": 0,
        "reasoning": u.reasoning_tokens,
    }


async def assert_admin_reports(
    s: Stack, expected: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The admin interceptions listing and usage-by-model agree with ``expected`` (by model:
    ``tokens``, ``prompt``, ``session`` and ``calls``, one interception each); returns the
    listed interceptions by model for further checks."""
    async with asyncio.timeout(TIMEOUT):
        listing = await admin_get(s, "/api/v1/interceptions?limit=50")
        usage = await admin_get(s, "/api/v1/usage?group_by=model")
    by_model = {item["model"]: item for item in listing["interceptions"]}
    assert set(by_model) == set(expected)
    for model, want in expected.items():
        item = by_model[model]
        assert item["tokens"] == want["tokens"]
        assert item["prompt"] == want["prompt"]
        assert (item["client"], item["session_id"]) == ("Codex", want["session"])
        got_calls = [
            {k: c[k] for k in ("name", "call_id", "arguments")} for c in item["tool_calls"]
        ]
        assert sorted(got_calls, key=lambda c: c["call_id"]) == sorted(
            want["calls"], key=lambda c: c["call_id"]
        )
    # The scenario models (gpt-text, …) have no price: recorded unpriced, never guessed.
    assert usage["rows"] == [
        {"key": model, "interceptions": 1, **want["tokens"], "cost_usd": 0, "unpriced": True}
        for model, want in sorted(expected.items())
    ]
    return by_model


async def assert_unreachable_upstream(
    s: Stack, create: Callable[[bool], Awaitable[object]]
) -> None:
    """``create(stream)`` against a provider nobody listens for fails with an OpenAI-shaped
    502, blocking and streaming alike, and both interceptions record a server error."""
    for stream in (False, True):
        async with asyncio.timeout(TIMEOUT):
            try:
                await create(stream)
            except openai.InternalServerError as exc:
                failure = exc
            else:
                raise AssertionError("the request to an unreachable upstream succeeded")
        assert failure.status_code == 502
        err = failure.response.json()["error"]
        assert err["type"] == "server_error"
        assert err["message"].startswith("upstream unreachable")
    assert await s.error_types() == ["server_error", "server_error"]
