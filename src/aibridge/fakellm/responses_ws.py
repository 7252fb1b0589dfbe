"""OpenAI Responses over WebSocket, as the fake upstream speaks it.

The protocol (OpenAI's ``wss://…/v1/responses``, used by Codex CLI): a ``GET`` upgrade
carrying the API key in ``Authorization``; then the client sends JSON text messages
``{"type":"response.create", …a Responses request body…}`` (or ``response.processed``),
and the server answers each ``response.create`` with the same events a Responses SSE
stream carries (``response.created`` … ``response.completed``), one JSON text message per
event, one response at a time; ``"generate": false`` (a warm-up) is answered with an empty
completed response. A refused create is answered with a wrapped error event
``{"type":"error","status":N,"error":{"type","code","message"}}`` and the socket stays
open. A handshake the server refuses gets a plain HTTP error (401, 429 …).

Messages are read while a response is being sent (a real server notices a client that
closes mid-response), so a closed socket cancels the response in progress and counts as a
disconnect, as an abandoned HTTP stream does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, MultiDict

from aibridge.fakellm import openai_chat, openai_responses
from aibridge.fakellm.request_log import RecordedRequest
from aibridge.fakellm.scenario import Kind, Scenario, Usage
from aibridge.fakellm.wire import cut_index, dumps

if TYPE_CHECKING:
    from aibridge.fakellm.server import FakeLLM

MAX_MESSAGE = 64 * 1024 * 1024
"""The largest message the fake accepts (larger than any gateway limit under test)."""
_NOTHING = Usage(input_tokens=0, output_tokens=0)


def wrapped_error(status: int, scenario: Scenario) -> dict[str, Any]:
    """The error event a WebSocket server sends for a refused ``response.create``."""
    body = openai_chat.error_body(
        status,
        error_type=scenario.error_type,
        code=scenario.error_code,
        message=scenario.error_message,
    )
    return {"type": "error", "status": status, "error": body["error"]}


async def serve(fake: FakeLLM, request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses`` with an upgrade: the handshake (logged like any request, with
    the key checks and scripted HTTP errors of the other routes), then the socket."""
    rec = await fake._record(request)
    if (refused := fake._refusal(rec, "openai")) is not None:
        return refused
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=True)
    if not ws.can_prepare(request).ok:
        return fake._error(rec, "openai", 400, message="expected a WebSocket upgrade")
    rec.status = 101
    await ws.prepare(request)
    fake.websockets_opened += 1
    turns: asyncio.Queue[RecordedRequest] = asyncio.Queue()
    worker = asyncio.create_task(_answer(fake, ws, turns))
    current: list[RecordedRequest] = []
    fake._active.add(worker)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            turn = _turn_request(rec, msg.data)
            fake._log(turn)
            if isinstance(turn.json, dict) and turn.json.get("type") == "response.create":
                current.append(turn)
                turns.put_nowait(turn)
    finally:
        fake._active.discard(worker)
        unfinished = [t for t in current if t.status is None]
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        for turn in unfinished:
            fake._note_disconnect(turn)
        fake.websocket_close_codes.append(ws.close_code)
        fake.websocket_closed.set()
    return ws


def _turn_request(handshake: RecordedRequest, data: str) -> RecordedRequest:
    """One client message, logged as a request on the handshake's path and headers."""
    body = data.encode()
    parsed: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(body)
    return RecordedRequest(
        method="WS",
        path=handshake.path,
        query=MultiDict(handshake.query),
        headers=CIMultiDict(handshake.headers),
        body=body,
        json=parsed,
        target=handshake.target,
    )


async def _answer(
    fake: FakeLLM, ws: web.WebSocketResponse, turns: asyncio.Queue[RecordedRequest]
) -> None:
    """Answer the queued ``response.create`` messages one after the other."""
    while True:
        rec = await turns.get()
        body = rec.json
        rec.api = "responses"
        if "model" not in body:
            rec.status = 400
            refused = wrapped_error(400, Scenario.http_error(400, message="model is required"))
            await _send(fake, ws, refused)
            continue
        if body.get("generate") is False:
            # A warm-up (Codex sends one per session): the response is created and
            # completed at once, with no output and no tokens generated.
            rec.status = 200
            await _respond(fake, ws, rec, body, Scenario.text_reply("", usage=_NOTHING))
            continue
        scenario = fake._choose(rec)
        if scenario.kind is Kind.HTTP_ERROR:
            rec.status = scenario.status
            await _send(fake, ws, wrapped_error(scenario.status, scenario))
            continue
        await _respond(fake, ws, rec, body, scenario)


async def _respond(
    fake: FakeLLM,
    ws: web.WebSocketResponse,
    rec: RecordedRequest,
    body: dict[str, Any],
    scenario: Scenario,
) -> None:
    """Send one response's events, with the scenario's pacing and interruption."""
    model = str(body["model"])
    ids = openai_responses.Ids(scenario)
    rec.response_id, rec.tool_call_ids = ids.response_id, list(ids.call_ids)
    events = openai_responses.stream_events(scenario, body, model, ids)
    interrupting = scenario.kind in (Kind.STREAM_ERROR, Kind.DROP, Kind.STALL)
    cut = cut_index(events, scenario.deltas_before) if interrupting else -1
    for i, event in enumerate(events):
        if i == cut:
            if scenario.kind is Kind.STREAM_ERROR:
                for err in openai_responses.stream_error_event(scenario, body, model, ids, i):
                    await _send(fake, ws, err.data)
                rec.status = 200
                return
            if scenario.kind is Kind.DROP:
                rec.dropped = True
                rec.status = 200
                await ws.close(code=1011, message=b"dropped")
                return
            await fake._stall(scenario)
        if scenario.delay:
            await asyncio.sleep(scenario.delay)
        await _send(fake, ws, event.data)
    rec.status = 200
    if body.get("store", True) is not False:
        fake.responses[ids.response_id] = openai_responses.stored(
            openai_responses.completed_response(scenario, body, model, ids)
        )


async def _send(fake: FakeLLM, ws: web.WebSocketResponse, event: dict[str, Any] | str) -> None:
    """Send one event as a JSON text message, and log it."""
    text = event if isinstance(event, str) else dumps(event).decode()
    fake.websocket_sent.append(text)
    await ws.send_str(text)
