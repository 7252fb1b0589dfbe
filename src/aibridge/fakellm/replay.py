"""Replaying a captured response: the recorded bytes, sent as they were recorded.

A replayed SSE body is written one event at a time (each piece ends at the blank line that
ends an event), so the receiver sees a stream arrive in pieces as from a real upstream; a
JSON body is one write. The bytes are never parsed or re-encoded.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from aibridge.fakellm.exchange import is_event_stream
from aibridge.fakellm.request_log import RecordedRequest
from aibridge.fakellm.scenario import Scenario


def sse_pieces(body: bytes) -> list[bytes]:
    """``body`` cut after every blank line (``\\n\\n``): one piece per SSE event, the pieces
    joining back to ``body`` exactly."""
    pieces: list[bytes] = []
    start = 0
    while (end := body.find(b"\n\n", start)) != -1:
        pieces.append(body[start : end + 2])
        start = end + 2
    if start < len(body):
        pieces.append(body[start:])
    return pieces


async def replay(
    request: web.Request, rec: RecordedRequest, scenario: Scenario, headers: dict[str, str]
) -> web.StreamResponse:
    """Answer ``request`` with the scenario's recorded body, status and content type (plus
    the provider's usual ``headers``); ``scenario.delay`` paces an SSE body's events."""
    body = scenario.replay_body
    content_type = scenario.replay_content_type
    rec.status = scenario.status
    all_headers = {**headers, "Content-Type": content_type}
    if not is_event_stream(content_type):
        return web.Response(body=body, status=scenario.status, headers=all_headers)
    resp = web.StreamResponse(
        status=scenario.status, headers={**all_headers, "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    for piece in sse_pieces(body):
        if scenario.delay:
            await asyncio.sleep(scenario.delay)
        await resp.write(piece)
    await resp.write_eof()
    return resp
