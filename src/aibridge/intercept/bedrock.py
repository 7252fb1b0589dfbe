"""The Bedrock leg of the pipeline: send a Messages request to Bedrock, relay what comes back.

:func:`send` replaces the plain upstream call for a ``bedrock`` provider: the body is
transformed for ``invoke`` (:mod:`aibridge.providers.bedrock.transform`) or sent unchanged
for ``mantle``, signed with SigV4 over exactly the headers that go out, and sent on the
pooled session. The provider's AWS credentials are its one pool "key": Bedrock throttling
cools them for ``key_cooldown_seconds`` like a 429 cools an API key.

:func:`relay_error` turns Bedrock's errors (``x-amzn-ErrorType`` + ``{"message": …}``) into
Anthropic-shaped ones with the matching status; :func:`relay_event_stream` converts the
binary event stream into Anthropic SSE event by event, as frames arrive.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import re

import aiohttp
import orjson
from aiohttp import web

from aibridge.intercept.actor_headers import actor_metadata, add_actor_headers
from aibridge.intercept.api import API
from aibridge.intercept.errors import anthropic_error, error_response, error_type_for_status
from aibridge.intercept.failover import client_timeout
from aibridge.intercept.hooks import InterceptionHooks
from aibridge.intercept.interception import CLIENT_GONE, Interception, Outcome
from aibridge.intercept.relay import (
    STREAM_TRANSPORT_ERRORS,
    stream_outcome,
    stream_transport_failure,
    upstream_failure,
)
from aibridge.intercept.sse import SSEEvent
from aibridge.intercept.upstream_headers import response_headers_for_client
from aibridge.providers.bedrock import BedrockRuntime
from aibridge.providers.bedrock.credentials import CredentialError, sign_headers
from aibridge.providers.bedrock.eventstream import EventStreamDecoder, EventStreamError, Frame
from aibridge.providers.bedrock.transform import TransformError, invoke_body, invoke_path
from aibridge.providers.keyring import KeysExhausted, KeyWalker
from aibridge.providers.upstream import UpstreamBodyTooLarge, UpstreamClients, read_capped
from aibridge.recording.records import ErrorType

__all__ = ["EVENT_STREAM", "models_response", "relay_error", "relay_event_stream", "send"]

log = logging.getLogger(__name__)

EVENT_STREAM = "application/vnd.amazon.eventstream"
# AWS Partner attribution, appended to the User-Agent of Bedrock requests only (reference).
PARTNER_UA = "sdk-ua-app-id/APN_1.1%2Fpc_cdfmjwn8i6u8l9fwz8h82e4w3%24"

# Bedrock error (x-amzn-ErrorType, or an event-stream exception type, lower-camel-cased)
# -> (status the client gets, Anthropic error type).
_ERRORS: dict[str, tuple[int, str]] = {
    "throttlingexception": (429, "rate_limit_error"),
    "servicequotaexceededexception": (429, "rate_limit_error"),
    "validationexception": (400, "invalid_request_error"),
    "accessdeniedexception": (403, "permission_error"),
    "resourcenotfoundexception": (404, "not_found_error"),
    "modelnotreadyexception": (503, "overloaded_error"),
    "serviceunavailableexception": (503, "api_error"),
    "modeltimeoutexception": (504, "api_error"),
    "modelerrorexception": (502, "api_error"),
    "modelstreamerrorexception": (502, "api_error"),
    "internalserverexception": (500, "api_error"),
    # The gateway's own AWS credentials were refused: not the client's fault.
    "unrecognizedclientexception": (502, "api_error"),
    "invalidsignatureexception": (502, "api_error"),
    "expiredtokenexception": (502, "api_error"),
    "incompletesignatureexception": (502, "api_error"),
}
_CREDENTIAL_ERRORS = frozenset(
    {
        "unrecognizedclientexception",
        "invalidsignatureexception",
        "expiredtokenexception",
        "incompletesignatureexception",
    }
)
_EVENT_TYPE = re.compile(rb'\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_]+)"')


def _error_kind(name: str, status: int) -> tuple[int, str]:
    mapped = _ERRORS.get(name.lower())
    if mapped is not None:
        return mapped
    if status == 429:
        return 429, "rate_limit_error"
    if 400 <= status < 500:
        return status, "invalid_request_error"
    return (status if status >= 500 else 502), "api_error"


async def send(
    clients: UpstreamClients,
    runtime: BedrockRuntime,
    ix: Interception,
    request: web.Request,
    suffix: str,
    body: bytes,
) -> aiohttp.ClientResponse | tuple[web.Response, Outcome]:
    """Sign and send ``body`` to Bedrock: the upstream response, or the answer and outcome
    when none came (credentials cooling or missing, a body Bedrock cannot take, transport)."""
    provider = ix.provider
    stream = ix.request.stream
    model = ix.request.model or ""
    if runtime.protocol == "invoke":
        try:
            payload = invoke_body(body, model, request.headers.getall("anthropic-beta", ()))
        except TransformError as exc:
            return error_response("anthropic", 400, str(exc)), Outcome("bad_request", str(exc))
        url = provider.upstream_url(invoke_path(model, stream))
        accept = EVENT_STREAM if stream else "application/json"
    else:
        # Mantle speaks the Messages API itself: the body and model go as they are.
        payload = body
        url = provider.upstream_url(suffix)
        if ix.api != "messages":
            # Mantle's OpenAI APIs live at the host's root (/v1/chat/completions), its
            # Anthropic API under /anthropic, which is what base_url names.
            base_path = provider.base_url.raw_path.rstrip("/").removesuffix("/anthropic")
            url = url.with_path(base_path + suffix, encoded=True)
        accept = "text/event-stream" if stream else "application/json"
    walker = provider.keys.walker()
    ix.credential_hint = runtime.credentials.hint
    try:
        key = walker.next_key()
    except KeysExhausted as exc:
        walker.finish()
        extra = {"Retry-After": str(exc.retry_after_seconds)} if exc.status == 429 else None
        message = (
            f"Bedrock is throttling provider {provider.name!r}; retry after "
            f"{exc.retry_after_seconds}s"
        )
        return error_response("anthropic", 429, message, extra), Outcome("rate_limited", message)
    user_agent = request.headers.get("User-Agent")
    headers = {
        "Content-Type": "application/json",
        "Accept": accept,
        "User-Agent": f"{user_agent} {PARTNER_UA}" if user_agent else PARTNER_UA,
    }
    anthropic_version = request.headers.get("anthropic-version")
    if runtime.protocol == "mantle" and anthropic_version:
        headers["anthropic-version"] = anthropic_version
    headers.update(provider.options.extra_headers)
    if provider.options.send_actor_headers:
        # Before signing: the signature covers them like any other header.
        add_actor_headers(headers, ix.actor, actor_metadata(ix.client, ix.session_id))
    session_for = clients.for_url
    try:
        creds = await runtime.credentials.get(session_for)
    except CredentialError as exc:
        walker.finish()
        return upstream_failure(
            ix, 502, "server_error", "Bedrock credentials are not available", str(exc)
        )
    headers.update(
        sign_headers(creds, runtime.service, runtime.region, "POST", str(url), headers, payload)
    )
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "bedrock request",
            extra={
                "provider": provider.name,
                "interception_id": str(ix.id),
                "aws_bedrock": True,
                "bedrock_protocol": runtime.protocol,
                "model": model,
            },
        )
    dumper = clients.dumps.for_dir(provider.options.api_dump_dir)
    # What was sent, signed (the SigV4 Authorization and session token masked): the body
    # is the transformed one Bedrock received, not the client's.
    call = None if dumper is None else dumper.bridged(provider.name, model, ix.id, None)
    if call is not None:
        call.request("POST", url, headers, payload)
    try:
        upstream = await session_for(url).request(
            "POST",
            url,
            data=payload,
            headers=headers,
            timeout=client_timeout(provider.options.upstream_timeout_seconds, stream),
            allow_redirects=False,
            auto_decompress=True,
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        if call is not None:
            call.request_error(exc)
        return _transport_failure(ix, walker, exc)
    if call is not None:
        call.response(upstream)
    error_name = upstream.headers.get("x-amzn-ErrorType", "").split(":", 1)[0].lower()
    if upstream.status == 429 and error_name != "modelnotreadyexception":
        # Throttling is about these credentials; a model still loading is not.
        walker.mark_failed(key, 429, upstream.headers)
    elif upstream.status < 400:
        walker.mark_ok(key)
    walker.finish()
    return upstream


def _transport_failure(
    ix: Interception, walker: KeyWalker, exc: BaseException
) -> tuple[web.Response, Outcome]:
    """The answer when Bedrock gave no response: a timeout (504) or unreachable (502)."""
    walker.finish()
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return upstream_failure(
            ix, 504, "timeout", "upstream timed out", f"Bedrock timed out: {exc or 'no response'}"
        )
    return upstream_failure(
        ix,
        502,
        "server_error",
        "upstream unreachable",
        f"Bedrock unreachable: {type(exc).__name__}: {exc}",
    )


async def relay_error(
    ix: Interception, upstream: aiohttp.ClientResponse, limit: int
) -> tuple[web.Response, Outcome]:
    """A Bedrock error as Anthropic's error shape, with the status that matches its kind."""
    try:
        data = await read_capped(upstream, limit)
    except UpstreamBodyTooLarge:
        data = b""
    name = upstream.headers.get("x-amzn-ErrorType", "").split(":", 1)[0]
    message = ""
    try:
        obj = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        if obj.get("type") == "error" and isinstance(obj.get("error"), dict):
            # Already Anthropic-shaped (mantle): relayed with its own status and type.
            err = obj["error"]
            message = str(err.get("message") or "")
            out = web.Response(
                status=upstream.status,
                body=data,
                headers=response_headers_for_client(upstream.headers, decompressed=True),
            )
            return out, Outcome(error_type_for_status(upstream.status), message)
        raw = obj.get("message", obj.get("Message"))
        message = raw if isinstance(raw, str) else ""
        if not name and isinstance(obj.get("__type"), str):
            name = str(obj["__type"]).rsplit("#", 1)[-1]
    if not message:
        message = data[:500].decode(errors="replace") or f"HTTP {upstream.status}"
    status, kind = _error_kind(name, upstream.status)
    if name.lower() in _CREDENTIAL_ERRORS:
        message = f"Bedrock refused the gateway's AWS credentials ({name}): {message}"
    elif name:
        message = f"Bedrock {name}: {message}"
    extra: dict[str, str] = {}
    request_id = upstream.headers.get("x-amzn-RequestId")
    if request_id:
        extra["x-amzn-RequestId"] = request_id
    if status == 429:
        extra["Retry-After"] = str(max(0, round(ix.provider.options.key_cooldown_seconds)))
    response = web.Response(
        status=status, body=anthropic_error(kind, message), content_type="application/json"
    )
    response.headers.update(extra)
    return response, Outcome(error_type_for_status(status), message)


def _frame_event(frame: Frame) -> SSEEvent | tuple[str, str]:
    """A ``chunk`` frame as the Anthropic SSE event it carries, or (error kind, message)
    for an exception or error frame (or a chunk that cannot be read)."""
    message_type = frame.header(":message-type") or "event"
    if message_type == "exception":
        name = frame.header(":exception-type") or "exception"
        try:
            obj = orjson.loads(frame.payload)
            text = obj.get("message") if isinstance(obj, dict) else None
        except orjson.JSONDecodeError:
            text = None
        _, kind = _error_kind(name, 500)
        return kind, f"Bedrock {name}: {text or frame.payload[:200].decode(errors='replace')}"
    if message_type == "error":
        code = frame.header(":error-code") or "error"
        return "api_error", f"Bedrock {code}: {frame.header(':error-message') or ''}"
    if frame.header(":event-type") != "chunk":
        return "api_error", f"unexpected Bedrock event {frame.header(':event-type')!r}"
    try:
        obj = orjson.loads(frame.payload)
        data = binascii.a2b_base64(obj["bytes"], strict_mode=True)
    except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error):
        return "api_error", "Bedrock sent an unreadable chunk"
    match = _EVENT_TYPE.match(data)
    if match is None:
        return "api_error", "Bedrock sent a chunk without an event type"
    name = match.group(1).decode()
    raw = b"event: " + match.group(1) + b"\ndata: " + data + b"\n\n"
    return SSEEvent(event=name, data=data, raw=raw)


async def relay_event_stream(
    ix: Interception,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    api: API,
    hooks: InterceptionHooks,
    max_frame: int,
) -> tuple[web.StreamResponse, Outcome]:
    """Relay Bedrock's event stream as Anthropic SSE, each event written as its frame
    completes; a corrupt or oversized frame, or an exception frame, ends the client's
    stream with an Anthropic ``error`` event at once."""
    headers = response_headers_for_client(upstream.headers, decompressed=True)
    headers.popall("Content-Type", None)
    out = web.StreamResponse(status=upstream.status, headers=headers)
    out.content_type = "text/event-stream"
    out.headers["Cache-Control"] = "no-cache"
    out.headers["X-Accel-Buffering"] = "no"
    await out.prepare(request)
    decoder = EventStreamDecoder(max_frame)
    observer = api.stream_observer()
    read = upstream.content.readany
    writing = False
    failure: Outcome | None = None
    kind = "api_error"
    try:
        try:
            while chunk := await read():
                pieces = []
                for frame in decoder.feed(chunk):
                    event = _frame_event(frame)
                    if not isinstance(event, SSEEvent):
                        kind, message = event
                        failure = Outcome(_outcome_type(kind), message)
                        break
                    observer.observe(event)
                    pieces.append(event.raw)
                if pieces:
                    writing = True
                    await out.write(b"".join(pieces))
                    writing = False
                if failure is not None:
                    break
                if decoder.error is not None:
                    # The frames before the bad one went out; now the stream ends.
                    raise decoder.error
            if failure is None and decoder.pending:
                failure = Outcome("server_error", "Bedrock stream ended inside a frame")
        except EventStreamError as exc:
            failure = Outcome("server_error", f"Bedrock event stream broken: {exc}")
        except STREAM_TRANSPORT_ERRORS as exc:
            failure = stream_transport_failure(exc, request)
        if failure is not None and failure is not CLIENT_GONE:
            failure = await _fail(ix, out, api, failure, kind)
    except asyncio.CancelledError:
        result = observer.result()
        hooks.observed(ix, result)
        if failure is None:
            failure = CLIENT_GONE if writing or not result.completed else stream_outcome(result)
        ix.interrupted = failure
        raise
    result = observer.result()
    hooks.observed(ix, result)
    return out, failure if failure is not None else stream_outcome(result)


_KIND_OUTCOME: dict[str, ErrorType] = {
    "rate_limit_error": "rate_limited",
    "invalid_request_error": "bad_request",
    "permission_error": "unauthorized",
    "overloaded_error": "overloaded",
}


def _outcome_type(kind: str) -> ErrorType:
    return _KIND_OUTCOME.get(kind, "server_error")


async def _fail(
    ix: Interception, out: web.StreamResponse, api: API, failure: Outcome, kind: str
) -> Outcome:
    """End the client's stream with an Anthropic ``error`` event of type ``kind``."""
    message = failure.error_message or ""
    log.warning(
        "bedrock stream failed",
        extra={"provider": ix.provider.name, "interception_id": str(ix.id), "error": message},
    )
    try:
        await out.write(api.stream_error(message, kind))
    except ConnectionResetError:
        return CLIENT_GONE
    return failure


# The models list carries no creation dates of its own; a fixed one keeps it stable.
_MODELS_CREATED_AT = "2025-01-01T00:00:00Z"


def _model_entry(model_id: str) -> dict[str, str]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": _MODELS_CREATED_AT,
    }


def model_ids(runtime: BedrockRuntime) -> list[str]:
    """The model names a client may use: the ``models`` map's names, then ``model`` and
    ``small_fast_model``, each once."""
    settings = runtime.settings
    ids = list(settings.models)
    for extra in (settings.model, settings.small_fast_model):
        if extra and extra not in ids:
            ids.append(extra)
    return ids


def models_response(runtime: BedrockRuntime, label: str) -> web.Response:
    """``GET /v1/models`` (Anthropic's list shape) or ``/v1/models/{id}`` from the settings."""
    ids = model_ids(runtime)
    if label == "/v1/models":
        body = {
            "data": [_model_entry(i) for i in ids],
            "has_more": False,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")
    wanted = label.removeprefix("/v1/models/")
    if wanted in ids:
        return web.Response(
            body=orjson.dumps(_model_entry(wanted)), content_type="application/json"
        )
    return error_response("anthropic", 404, f"model {wanted!r} is not configured on this provider")
