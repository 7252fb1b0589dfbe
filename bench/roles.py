"""The benchmark's child processes: ``python -m bench.roles upstream|bare|load …``.

* **upstream**: a tiny aiohttp server answering ``POST /v1/messages`` (Anthropic) and
  ``POST /v1/chat/completions`` (OpenAI) with bytes pre-built by :mod:`aibridge.fakellm`
  (the real wire formats), one SSE event per write;
* **bare**: the yardstick relay. An ``aiohttp.web`` handler reads the body, posts it with
  ONE shared ``aiohttp.ClientSession`` (no connection limit, no total timeout) and returns
  the JSON, or relays the stream chunk by chunk with ``iter_any()``. No auth, no parsing,
  no recording: the floor any gateway on this stack pays;
* **bare-recording**: the bare relay plus exact recording through the gateway's own
  recorder (journal, batches, the SQLite writer thread), and nothing else: what the
  issue-9 requirement "recording stays on" costs by itself;
* **load**: the Python load generator (used when ``wrk`` is missing, and for TTFB);
* **trace-sink**: an OTLP/HTTP trace collector that reads each export and answers 200
  at once (``--tracing``: the gateway's exporter has somewhere cheap to send to).

Servers print ``PORT <n>`` once listening and stop on SIGTERM/SIGINT. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import (
    ANTHROPIC_STREAM_EVENTS,
    APIS,
    HOST,
    OPENAI_STREAM_CHUNKS,
    run_async,
)

Handler = Callable[..., Awaitable[Any]]


def anthropic_payloads() -> tuple[bytes, list[bytes]]:
    """The blocking body and the SSE events of the Anthropic reply (built once)."""
    from aibridge.fakellm import anthropic
    from aibridge.fakellm.scenario import Scenario
    from aibridge.fakellm.wire import dumps

    # message_start, block start, ping, block stop, message_delta, message_stop + deltas.
    deltas = ANTHROPIC_STREAM_EVENTS - 6
    scenario = Scenario.text_reply(" ".join(f"word{i}" for i in range(deltas)), chunks=deltas)
    ids = anthropic.Ids(scenario)
    model = APIS["anthropic"].model
    blocking = dumps(anthropic.blocking_body(scenario, model, ids))
    return blocking, [ev.encode() for ev in anthropic.stream_events(scenario, model, ids)]


def openai_payloads() -> tuple[bytes, list[bytes]]:
    """The blocking body and the SSE chunks (+ usage chunk + ``[DONE]``) of the OpenAI reply."""
    from aibridge.fakellm import openai_chat
    from aibridge.fakellm.scenario import Scenario
    from aibridge.fakellm.wire import dumps

    # The role chunk, the content deltas and the finish chunk make OPENAI_STREAM_CHUNKS.
    deltas = OPENAI_STREAM_CHUNKS - 2
    scenario = Scenario.text_reply(" ".join(f"word{i}" for i in range(deltas)), chunks=deltas)
    ids = openai_chat.Ids(scenario)
    model = APIS["openai"].model
    blocking = dumps(openai_chat.blocking_body(scenario, model, ids))
    events = openai_chat.stream_events(scenario, model, ids, include_usage=True)
    return blocking, [ev.encode() for ev in events]


async def _serve(routes: list[tuple[str, Handler]], port: int, on_cleanup: Handler | None) -> None:
    """Serve POST ``routes`` on loopback until SIGTERM/SIGINT; print ``PORT <n>``."""
    from aiohttp import web

    app = web.Application(client_max_size=16 * 1024 * 1024)
    for path, handler in routes:
        app.router.add_post(path, handler)
    if on_cleanup is not None:
        app.on_cleanup.append(on_cleanup)
    await serve_app(app, port)


async def serve_app(app: Any, port: int) -> None:
    """Serve the aiohttp ``app`` on loopback until SIGTERM/SIGINT; print ``PORT <n>`` once
    listening (what the benchmark's process runner waits for)."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def serve_upstream(port: int) -> None:
    """The fast fake upstream for both APIs."""
    from aiohttp import web

    json_headers = {"Content-Type": "application/json", "request-id": "req_bench"}
    sse_headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "request-id": "req_bench",
    }

    def handler(blocking: bytes, events: list[bytes]) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            # A cheap check is enough: every client sends a fixed, compact body.
            if b'"stream":true' not in body:
                return web.Response(body=blocking, headers=json_headers)
            out = web.StreamResponse(headers=sse_headers)
            await out.prepare(request)
            for event in events:
                await out.write(event)
            await out.write_eof()
            return out

        return answer

    routes = [
        (APIS["anthropic"].path, handler(*anthropic_payloads())),
        (APIS["openai"].path, handler(*openai_payloads())),
    ]
    await _serve(routes, port, None)


# The request headers the bare relays pass on (the benchmark's clients send no others).
FORWARDED = ("Content-Type", "Authorization", "x-api-key", "anthropic-version")


def _relay_session() -> Any:
    """The bare relays' one shared client session: no connection limit, no total
    timeout, bodies relayed as they come (as a gateway would)."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
    )


async def serve_bare(port: int, upstream: str) -> None:
    """The bare relay: forward every POST to ``upstream`` + the same path."""
    from aiohttp import web

    session = _relay_session()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k in FORWARDED if (v := request.headers.get(k)) is not None}
        async with session.post(upstream + request.path, data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if not ctype.startswith("text/event-stream"):
                data = await up.read()
                return web.Response(body=data, status=up.status, headers={"Content-Type": ctype})
            out = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def close_session(_app: web.Application) -> None:
        await session.close()

    await _serve([("/{tail:.*}", relay)], port, close_session)


def _usage_of(event: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of one SSE event or JSON body (None without one)."""
    import orjson

    start = event.find(b"{")
    if start < 0:
        return None
    try:
        data = orjson.loads(event[start:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    usage = data.get("usage") or (data.get("message") or {}).get("usage")
    return usage if isinstance(usage, dict) else None


async def serve_bare_recording(port: int, upstream: str, data_dir: str, user_id: str) -> None:
    """The bare relay plus exact recording and nothing else: the floor of issue 9's
    "recording stays on". Per request it decodes the body (model, last prompt), records
    the interception's start before the upstream call, reads the usage from the reply
    (every SSE event that carries one), and records the usage, the prompt and the end,
    through the gateway's own recorder (journal, batches, the SQLite writer thread) into
    the migrated database in ``data_dir``. No auth, routing, metrics, pool, limits or
    access log."""
    import uuid
    from pathlib import Path

    import orjson
    from aiohttp import web

    from aibridge.recording.recorder import Recorder
    from aibridge.recording.records import (
        InterceptionEnded,
        InterceptionStarted,
        PromptRecord,
        TokenUsageRecord,
    )
    from aibridge.store.db import create_engine, session_factory

    directory = Path(data_dir)
    engine = create_engine(f"sqlite+aiosqlite:///{directory / 'aibridge.db'}")
    recorder = Recorder.for_database(session_factory(engine), directory)
    await recorder.start()
    user = uuid.UUID(user_id)
    session = _relay_session()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        decoded = orjson.loads(body)
        content = decoded["messages"][-1]["content"]
        prompt = content if isinstance(content, str) else None
        provider = "anthropic" if request.path.endswith("/messages") else "openai"
        start = InterceptionStarted(
            initiator_id=user, provider=provider, provider_name=provider, model=decoded["model"]
        )
        recorder.record(start)
        headers = {k: v for k in FORWARDED if (v := request.headers.get(k)) is not None}
        usages: list[dict[str, Any]] = []
        async with session.post(upstream + request.path, data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if not ctype.startswith("text/event-stream"):
                data = await up.read()
                usage = _usage_of(data)
                usages += [usage] if usage else []
                out: web.StreamResponse = web.Response(
                    body=data, status=up.status, headers={"Content-Type": ctype}
                )
            else:
                out = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
                await out.prepare(request)
                pending = b""
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                    *events, pending = (pending + chunk).split(b"\n\n")
                    for event in events:
                        if b'"usage"' in event and (usage := _usage_of(event)) is not None:
                            usages.append(usage)
        for usage in usages:
            recorder.record(
                TokenUsageRecord(
                    interception_id=start.id,
                    input=usage.get("input_tokens") or usage.get("prompt_tokens") or 0,
                    output=usage.get("output_tokens") or usage.get("completion_tokens") or 0,
                )
            )
        if prompt is not None:
            recorder.record(PromptRecord(interception_id=start.id, prompt=prompt))
        recorder.record(InterceptionEnded(id=start.id))
        if isinstance(out, web.Response):
            return out
        await out.write_eof()
        return out

    async def close(_app: web.Application) -> None:
        await session.close()
        await recorder.close()
        await engine.dispose()

    await _serve([("/{tail:.*}", relay)], port, close)


async def serve_trace_sink(port: int) -> None:
    """``POST /v1/traces``: read the export, answer an empty ``ExportTraceServiceResponse``
    (zero bytes is its protobuf encoding)."""
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    await _serve([("/v1/traces", accept)], port, None)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to one role."""
    parser = argparse.ArgumentParser(prog="python -m bench.roles")
    sub = parser.add_subparsers(dest="role", required=True)
    up = sub.add_parser("upstream", help="fast fake upstream (both APIs)")
    up.add_argument("--port", type=int, default=0)
    bare = sub.add_parser("bare", help="bare aiohttp relay")
    bare.add_argument("--port", type=int, default=0)
    bare.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    rec = sub.add_parser("bare-recording", help="bare relay + exact recording (issue 9's floor)")
    rec.add_argument("--port", type=int, default=0)
    rec.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    rec.add_argument("--data-dir", required=True, help="a data dir with a migrated database")
    rec.add_argument("--user-id", required=True, help="the recorded interceptions' initiator")
    sink = sub.add_parser("trace-sink", help="OTLP/HTTP trace sink (answers 200)")
    sink.add_argument("--port", type=int, default=0)
    load = sub.add_parser("load", help="Python load generator (prints one JSON line)")
    load.add_argument("--url", required=True)
    load.add_argument("--headers", required=True, help="JSON object")
    load.add_argument("--api", required=True, choices=sorted(APIS))
    load.add_argument("--mode", required=True, choices=("blocking", "stream"))
    load.add_argument("--concurrency", type=int, required=True)
    load.add_argument("--duration", type=float, required=True)
    load.add_argument("--max-requests", type=int, default=1_000_000)
    ns = parser.parse_args(argv)

    if ns.role == "upstream":
        run_async(serve_upstream(ns.port))
    elif ns.role == "bare":
        if not ns.upstream.startswith(f"http://{HOST}:"):
            raise SystemExit("the bare relay only talks to loopback")
        run_async(serve_bare(ns.port, ns.upstream))
    elif ns.role == "bare-recording":
        if not ns.upstream.startswith(f"http://{HOST}:"):
            raise SystemExit("the bare relay only talks to loopback")
        run_async(serve_bare_recording(ns.port, ns.upstream, ns.data_dir, ns.user_id))
    elif ns.role == "trace-sink":
        run_async(serve_trace_sink(ns.port))
    else:
        if not ns.url.startswith(f"http://{HOST}:"):
            raise SystemExit("the load generator only talks to loopback")
        from bench.load import python_cell

        result = run_async(
            python_cell(
                ns.url,
                json.loads(ns.headers),
                APIS[ns.api],
                ns.mode == "stream",
                ns.concurrency,
                ns.duration,
                ns.max_requests,
            )
        )
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
