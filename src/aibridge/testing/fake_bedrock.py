"""A fake Amazon Bedrock runtime (and STS) on loopback that checks SigV4 like AWS does.

:class:`FakeBedrock` answers in Bedrock's real wire format: JSON for ``/model/{id}/invoke``,
the binary event stream (prelude and message CRCs, ``chunk`` frames carrying base64
Anthropic events) for ``/model/{id}/invoke-with-response-stream``, Anthropic SSE for the
mantle ``…/v1/messages``, and Bedrock's HTTP errors (``x-amzn-ErrorType``). Every request's
signature is recomputed with botocore from the known secret, region and service; a bad one
is a 403 ``InvalidSignatureException`` as on AWS. :class:`FakeSTS` answers ``AssumeRole``
with temporary credentials the Bedrock fake then accepts.

The event-stream encoder here is written independently of the gateway's decoder, so the
tests that pair them check one against the other (and botocore's own decoder reads it too).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import secrets
import struct
import urllib.parse
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from aibridge.testing.loopback import serve_on_loopback

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "FakeBedrock",
    "FakeSTS",
    "Seen",
    "chunk_frame",
    "encode_frame",
    "exception_frame",
]

ACCESS_KEY = "AKIAFAKEBEDROCK00001"
SECRET_KEY = "fake-bedrock-secret-key-0000000000000000"
REGION = "us-east-1"

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


# --- the event stream, encoded -------------------------------------------------------------


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers, both CRCs correct."""
    block = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        block += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + block + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk_frame(event: dict[str, Any]) -> bytes:
    """A ``chunk`` frame carrying one Anthropic stream event, as Bedrock sends it."""
    data = base64.b64encode(orjson.dumps(event)).decode()
    payload = orjson.dumps({"bytes": data, "p": "abcdefghijklmnopqrstuvwxyz"[: len(data) % 26]})
    return encode_frame(
        {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
        payload,
    )


def exception_frame(kind: str, message: str) -> bytes:
    """An exception frame (e.g. ``throttlingException``) as Bedrock sends mid-stream."""
    return encode_frame(
        {
            ":exception-type": kind,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        orjson.dumps({"message": message}),
    )


# --- answers -------------------------------------------------------------------------------


def text_events(model: str, text: str, usage: dict[str, int]) -> list[dict[str, Any]]:
    """A plain text reply as Anthropic stream events (usage snapshots as Anthropic sends)."""
    start_usage = {
        "input_tokens": usage["input_tokens"],
        "output_tokens": 1,
        "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
        "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
    }
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_bdrk_01",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    for word in text.split(" "):
        events.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": word + " "},
            }
        )
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": usage["input_tokens"],
                "outputTokenCount": usage["output_tokens"],
                "invocationLatency": 12,
                "firstByteLatency": 5,
            },
        },
    ]
    return events


def tool_events(model: str) -> list[dict[str, Any]]:
    """A reply with a thinking block and a tool call (input streamed in two pieces)."""
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_bdrk_tool",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 30, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "I should read the file."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "c2ln"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"file_path": '},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '"/tmp/foo"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 21},
        },
        {"type": "message_stop"},
    ]


def message_from_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The blocking answer equivalent to a stream of events."""
    message = dict(events[0]["message"])
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    usage = dict(message["usage"])
    for ev in events[1:]:
        kind = ev["type"]
        if kind == "content_block_start":
            blocks[ev["index"]] = dict(ev["content_block"])
        elif kind == "content_block_delta":
            d, b = ev["delta"], blocks[ev["index"]]
            if d["type"] == "text_delta":
                b["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] = d["signature"]
            elif d["type"] == "input_json_delta":
                partial[ev["index"]] = partial.get(ev["index"], "") + d["partial_json"]
        elif kind == "message_delta":
            message["stop_reason"] = ev["delta"]["stop_reason"]
            usage.update(ev["usage"])
    for index, text in partial.items():
        blocks[index]["input"] = orjson.loads(text)
    message["content"] = [blocks[i] for i in sorted(blocks)]
    message["usage"] = usage
    return message


@dataclass
class Seen:
    """One request the fake accepted (signature valid)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    access_key: str
    service: str


@dataclass
class FakeBedrock:
    """The fake runtime; see the module docstring. Set ``behaviours`` (consumed one per
    request, then ``"text"``): ``text``, ``tool``, ``throttle``, ``exception_mid_stream``,
    ``many`` (``many_events`` small deltas; the rest wait for ``gate`` after the first),
    ``corrupt``, ``oversize``, ``validation``, ``access_denied``, ``not_ready``,
    ``unavailable``."""

    region: str = REGION
    service: str = "bedrock"
    credentials: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: {ACCESS_KEY: (SECRET_KEY, None)}
    )
    behaviours: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "input_tokens": 11,
            "output_tokens": 7,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 3,
        }
    )
    many_events: int = 1000
    gate: asyncio.Event | None = None
    requests: list[Seen] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    url: str = ""
    sent_all: asyncio.Event = field(default_factory=asyncio.Event)

    def verify(self, request: web.Request, body: bytes) -> tuple[str, str] | str:
        """The (access key, service) of a correctly signed request, or why it is not."""
        return verify_sigv4(request, body, self.credentials, self.region)

    def app(self) -> web.Application:
        """The aiohttp app (routes for invoke, invoke-with-response-stream and mantle)."""
        app = web.Application()
        app.router.add_post("/model/{model}/invoke", self._invoke)
        app.router.add_post("/model/{model}/invoke-with-response-stream", self._invoke)
        app.router.add_post("/{prefix:.*}v1/messages", self._mantle)
        app.router.add_post("/v1/chat/completions", self._mantle_chat)
        return app

    async def _mantle_chat(self, request: web.Request) -> web.StreamResponse:
        seen, refused = await self._accept(request)
        if refused is not None:
            return refused
        assert seen is not None
        return web.json_response(
            {
                "id": "chatcmpl-mantle",
                "object": "chat.completion",
                "created": 1,
                "model": seen.body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello from mantle chat"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
            }
        )

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[FakeBedrock]:
        """Run on a loopback port (``url`` set) for the duration of the block."""
        async with serve_on_loopback(self.app()) as url:
            self.url = url
            yield self

    def _next(self) -> str:
        return self.behaviours.pop(0) if self.behaviours else "text"

    async def _accept(self, request: web.Request) -> tuple[Seen | None, web.Response | None]:
        body = await request.read()
        checked = self.verify(request, body)
        if isinstance(checked, str):
            self.rejected.append(checked)
            return None, _aws_error(403, "InvalidSignatureException", checked)
        akid, service = checked
        if service != self.service:
            self.rejected.append(f"service {service}")
            return None, _aws_error(403, "InvalidSignatureException", f"wrong service {service}")
        seen = Seen(request.raw_path, dict(request.headers), orjson.loads(body), akid, service)
        self.requests.append(seen)
        return seen, None

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        _seen, refused = await self._accept(request)
        if refused is not None:
            return refused
        model = urllib.parse.unquote(request.match_info["model"])
        stream = request.path.endswith("-with-response-stream")
        behaviour = self._next()
        error = _http_errors().get(behaviour)
        if error is not None:
            return _aws_error(*error)
        events = (
            tool_events(model)
            if behaviour == "tool"
            else text_events(model, "Hello from fake Bedrock", self.usage)
        )
        if not stream:
            return web.json_response(
                message_from_events(events), headers={"x-amzn-RequestId": "req-fake-1"}
            )
        out = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amzn-Bedrock-Content-Type": "application/json",
                "x-amzn-RequestId": "req-fake-1",
            }
        )
        await out.prepare(request)
        if behaviour == "many":
            await self._many(out, model)
        elif behaviour == "exception_mid_stream":
            for ev in events[:3]:
                await out.write(chunk_frame(ev))
            await out.write(exception_frame("throttlingException", "Too many tokens, slow down"))
        elif behaviour == "corrupt":
            await out.write(chunk_frame(events[0]))
            bad = bytearray(chunk_frame(events[1]))
            bad[-6] ^= 0xFF
            await out.write(bytes(bad))
            await out.write(b"".join(chunk_frame(ev) for ev in events[2:]))
        elif behaviour == "oversize":
            await out.write(chunk_frame(events[0]))
            await out.write(struct.pack(">II", 64 * 1024 * 1024, 0)[:8])
            prelude = struct.pack(">II", 64 * 1024 * 1024, 0)
            await out.write(struct.pack(">I", zlib.crc32(prelude)))
        else:
            # Frames split at odd places, as TCP may deliver them.
            data = b"".join(chunk_frame(ev) for ev in events)
            for i in range(0, len(data), 37):
                await out.write(data[i : i + 37])
        self.sent_all.set()
        await out.write_eof()
        return out

    async def _many(self, out: web.StreamResponse, model: str) -> None:
        events = text_events(model, "x", self.usage)
        head, tail = events[:2], events[3:]
        await out.write(b"".join(chunk_frame(ev) for ev in head))
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 10)
        for i in range(self.many_events):
            delta = {"type": "text_delta", "text": f"{i} "}
            await out.write(
                chunk_frame({"type": "content_block_delta", "index": 0, "delta": delta})
            )
        await out.write(b"".join(chunk_frame(ev) for ev in tail))

    async def _mantle(self, request: web.Request) -> web.StreamResponse:
        seen, refused = await self._accept(request)
        if refused is not None:
            return refused
        assert seen is not None
        model = str(seen.body.get("model", ""))
        behaviour = self._next()
        error = _http_errors().get(behaviour)
        if error is not None:
            return _aws_error(*error)
        events = text_events(model, "Hello from mantle", self.usage)
        if not seen.body.get("stream"):
            return web.json_response(message_from_events(events))
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for ev in events:
            await out.write(f"event: {ev['type']}\ndata: ".encode() + orjson.dumps(ev) + b"\n\n")
        await out.write_eof()
        return out


def _http_errors() -> dict[str, tuple[int, str, str]]:
    return {
        "throttle": (429, "ThrottlingException", "Too many requests, please wait."),
        "validation": (400, "ValidationException", "messages: field required"),
        "access_denied": (403, "AccessDeniedException", "not authorized to invoke model"),
        "not_ready": (429, "ModelNotReadyException", "model is not ready"),
        "unavailable": (503, "ServiceUnavailableException", "service unavailable"),
    }


def _aws_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": "req-fake-err",
        },
    )


def verify_sigv4(
    request: web.Request,
    body: bytes,
    credentials: dict[str, tuple[str, str | None]],
    region: str,
) -> tuple[str, str] | str:
    """Recompute the request's SigV4 signature with botocore: (access key, service), or
    what is wrong."""
    match = _AUTH.match(request.headers.get("Authorization", ""))
    if match is None:
        return "missing or malformed SigV4 Authorization header"
    akid, service = match.group("akid"), match.group("service")
    known = credentials.get(akid)
    if known is None:
        return f"unknown access key {akid}"
    secret, token = known
    if match.group("region") != region:
        return f"wrong region {match.group('region')}"
    if token is not None and request.headers.get("X-Amz-Security-Token") != token:
        return "missing or wrong session token"
    amz_date = request.headers.get("X-Amz-Date", "")
    if not amz_date.startswith(match.group("date")):
        return "X-Amz-Date does not match the credential scope"
    signed = match.group("signed").split(";")
    headers = {}
    for name in signed:
        if name not in request.headers:
            return f"signed header {name} missing"
        headers[name] = request.headers[name]
    url = f"http://{request.headers['Host']}{request.raw_path}"
    aws = AWSRequest(method=request.method, url=url, headers=headers, data=body)
    aws.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(akid, secret, token), service, region)
    canonical = signer.canonical_request(aws)
    expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
    if not secrets.compare_digest(expected, match.group("sig")):
        return "signature mismatch"
    return akid, service


@dataclass
class FakeSTS:
    """STS ``AssumeRole`` (SigV4 service ``sts`` checked): issues temporary credentials and
    adds them to ``grant_to`` (the Bedrock fake's credential table)."""

    grant_to: dict[str, tuple[str, str | None]]
    region: str = REGION
    base: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: {ACCESS_KEY: (SECRET_KEY, None)}
    )
    lifetime: float = 3600.0
    calls: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        checked = verify_sigv4(request, body, self.base, self.region)
        if isinstance(checked, str) or checked[1] != "sts":
            return web.Response(
                status=403,
                text=f"<ErrorResponse><Error><Message>{checked}</Message></Error></ErrorResponse>",
            )
        form = dict(urllib.parse.parse_qsl(body.decode()))
        self.calls.append(form)
        if form.get("Action") != "AssumeRole":
            return web.Response(status=400, text="bad action")
        n = len(self.calls)
        akid, secret, token = f"ASIAFAKEROLE{n:08d}", f"role-secret-{n}", f"role-token-{n}"
        self.grant_to[akid] = (secret, token)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.lifetime)
        xml = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleResult><Credentials>"
            f"<AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>"
            f"<SessionToken>{token}</SessionToken>"
            f"<Expiration>{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
            "</Credentials></AssumeRoleResult></AssumeRoleResponse>"
        )
        return web.Response(text=xml, content_type="text/xml")

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[FakeSTS]:
        """Run on a loopback port (``url`` set) for the duration of the block."""
        app = web.Application()
        app.router.add_post("/", self._handle)
        async with serve_on_loopback(app) as url:
            self.url = url + "/"
            yield self
