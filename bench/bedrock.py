"""Bedrock streaming: the gateway vs a bare relay of the same fake event stream.

    python -m bench.bedrock [--duration 5] [--concurrency 1,16]

Three processes, as in the main benchmark: a fake Bedrock runtime answering
``invoke-with-response-stream`` with the Anthropic benchmark stream (50 events) as binary
event-stream frames (client CPU); the target (relay CPU); the Python load generator
(client CPU). The targets:

* ``bare``: an aiohttp relay that does only what any Bedrock relay must — SigV4-sign with
  botocore, decode the event stream (the gateway's decoder) and write Anthropic SSE;
* ``aibridge``: ``aibridge serve`` with a ``bedrock`` provider (auth, transforms, signing,
  decoding, observation, recording to SQLite).

Prints one Markdown table (medians of the cells) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import APIS, CLIENT_CPU, HOST, RELAY_CPU, START_TIMEOUT, child_env, free_port
from bench.procs import Processes, read_line, wait_http
from bench.roles import anthropic_payloads, serve_app
from bench.stack import PORT_LINE, _aibridge, _cli

ACCESS_KEY = "AKIABENCHBEDROCK0001"
SECRET_KEY = "bench-bedrock-secret-0000000000000000000"
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def _frames() -> tuple[bytes, bytes]:
    """The blocking body and the whole event stream of the benchmark's Anthropic answer."""
    from aibridge.testing.fake_bedrock import chunk_frame

    blocking, events = anthropic_payloads()
    frames = []
    for raw in events:
        data = next(line[6:] for line in raw.split(b"\n") if line.startswith(b"data: "))
        frames.append(chunk_frame(json.loads(data)))
    return blocking, b"".join(frames)


async def serve_upstream(port: int) -> None:
    """The fake Bedrock: the stream in 4 KiB writes (signatures are checked by the tests,
    not here, so the upstream costs both targets the same)."""
    from aiohttp import web

    blocking, stream = _frames()
    headers = {"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": "r"}

    async def invoke(request: web.Request) -> web.StreamResponse:
        await request.read()
        if not request.path.endswith("-with-response-stream"):
            return web.Response(body=blocking, content_type="application/json")
        out = web.StreamResponse(headers=headers)
        await out.prepare(request)
        for i in range(0, len(stream), 4096):
            await out.write(stream[i : i + 4096])
        await out.write_eof()
        return out

    app = web.Application()
    app.router.add_post("/model/{model}/{op}", invoke)
    await serve_app(app, port)


async def serve_bare(port: int, upstream: str) -> None:
    """The bare relay: sign, forward, decode the event stream, write SSE. Nothing else."""
    import aiohttp
    import orjson
    from aiohttp import web
    from botocore.credentials import ReadOnlyCredentials

    from aibridge.providers.bedrock.credentials import sign_headers
    from aibridge.providers.bedrock.eventstream import EventStreamDecoder
    from aibridge.providers.bedrock.transform import invoke_body, invoke_path

    creds = ReadOnlyCredentials(ACCESS_KEY, SECRET_KEY, None)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    )

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = invoke_body(body, MODEL, ())
        url = upstream + invoke_path(MODEL, True)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/vnd.amazon.eventstream",
        }
        headers.update(sign_headers(creds, "bedrock", "us-east-1", "POST", url, headers, payload))
        async with session.post(url, data=payload, headers=headers) as up:
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            decoder = EventStreamDecoder()
            while chunk := await up.content.readany():
                pieces = []
                for frame in decoder.feed(chunk):
                    data = base64.b64decode(orjson.loads(frame.payload)["bytes"])
                    kind = orjson.loads(data)["type"].encode()
                    pieces.append(b"event: " + kind + b"\ndata: " + data + b"\n\n")
                if pieces:
                    await out.write(b"".join(pieces))
            await out.write_eof()
            return out

    async def close(_app: web.Application) -> None:
        await session.close()

    app = web.Application()
    app.router.add_post("/{tail:.*}", relay)
    app.on_cleanup.append(close)
    await serve_app(app, port)


def _load(procs: Processes, url: str, headers: dict[str, str], c: int, duration: float) -> Any:
    argv = [
        sys.executable,
        "-m",
        "bench.roles",
        "load",
        "--url",
        url,
        "--headers",
        json.dumps(headers),
        "--api",
        "anthropic",
        "--mode",
        "stream",
        "--concurrency",
        str(c),
        "--duration",
        str(duration),
    ]
    proc = procs.start(argv, cpu=CLIENT_CPU, env=child_env(), name=f"load-{c}")
    out, _ = proc.communicate(timeout=duration + 60)
    return json.loads(out.decode().strip().splitlines()[-1])


def drive(duration: float, concurrencies: list[int], rounds: int) -> int:
    """Start everything, run the cells (alternating targets), print the table."""
    with tempfile.TemporaryDirectory(prefix="bench-bedrock-") as tmp:
        procs = Processes(Path(tmp))
        try:
            me = [sys.executable, "-m", "bench.bedrock"]
            up = procs.start([*me, "upstream"], cpu=CLIENT_CPU, env=child_env(), name="upstream")
            upstream = f"http://{HOST}:{int(read_line(procs, up, PORT_LINE, START_TIMEOUT))}"
            bare = procs.start(
                [*me, "bare", "--upstream", upstream], cpu=RELAY_CPU, env=child_env(), name="bare"
            )
            bare_url = f"http://{HOST}:{int(read_line(procs, bare, PORT_LINE, START_TIMEOUT))}"
            port = free_port()
            env = child_env(
                {
                    "AIBRIDGE_DATA_DIR": str(Path(tmp) / "data"),
                    "AIBRIDGE_LISTEN": f"{HOST}:{port}",
                    "AIBRIDGE_LOG_LEVEL": "warning",
                }
            )
            Path(tmp, "data").mkdir()
            settings = {
                "bedrock": {
                    "region": "us-east-1",
                    "access_key_id": ACCESS_KEY,
                    "secret_access_key": SECRET_KEY,
                    "model": MODEL,
                }
            }
            _cli(
                sys.executable,
                [
                    "providers",
                    "create",
                    "bedrock",
                    "--type",
                    "bedrock",
                    "--base-url",
                    upstream,
                    "--settings",
                    json.dumps(settings),
                ],
                env,
            )
            token = _cli(sys.executable, ["users", "create", "benchuser"], env).strip()
            token = token.splitlines()[-1].strip()
            gw = procs.start(
                _aibridge(sys.executable, "serve"),
                cpu=RELAY_CPU,
                env=env,
                name="aibridge",
                stdout=False,
            )
            wait_http(f"http://{HOST}:{port}/readyz", START_TIMEOUT, gw)
            targets = {
                "bare": (bare_url + "/v1/messages", APIS["anthropic"].upstream_headers()),
                "aibridge": (
                    f"http://{HOST}:{port}/bedrock/v1/messages",
                    {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                ),
            }
            results: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for c in concurrencies:
                for _ in range(rounds):
                    for name, (url, headers) in targets.items():
                        _load(procs, url, headers, c, min(1.0, duration))  # warm-up
                        cell = _load(procs, url, headers, c, duration)
                        if cell["errors"]:
                            raise RuntimeError(f"{name} c={c}: {cell['first_error']}")
                        results.setdefault((name, c), []).append(cell)
            print(_table(results, concurrencies))
        finally:
            procs.close()
    return 0


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def _table(results: dict[tuple[str, int], list[dict[str, Any]]], cs: list[int]) -> str:
    lines = [
        "| c | target | req/s | p50 ms | p99 ms | TTFB p50 ms | TTFB p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cs:
        for name in ("bare", "aibridge"):
            cells = results[(name, c)]
            row = [
                _median([cell[k] for cell in cells])
                for k in ("rps", "p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms")
            ]
            lines.append(f"| {c} | {name} | " + " | ".join(f"{v:g}" for v in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Roles (upstream, bare) or the driver."""
    from bench.common import run_async

    parser = argparse.ArgumentParser(prog="python -m bench.bedrock")
    parser.add_argument("role", nargs="?", choices=("upstream", "bare"))
    parser.add_argument("--upstream", default="")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args(argv)
    if ns.role == "upstream":
        run_async(serve_upstream(0))
        return 0
    if ns.role == "bare":
        run_async(serve_bare(0, ns.upstream))
        return 0
    return drive(ns.duration, [int(c) for c in ns.concurrency.split(",")], ns.rounds)


if __name__ == "__main__":
    raise SystemExit(main())
