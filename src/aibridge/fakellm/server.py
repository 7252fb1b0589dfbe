"""The fake upstream HTTP server: routes, scenario selection, auth, request log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web
from multidict import CIMultiDict, MultiDict

from aibridge.fakellm import anthropic, openai_chat, openai_responses, responses_ws
from aibridge.fakellm.replay import replay
from aibridge.fakellm.request_log import Api, RecordedRequest, bearer
from aibridge.fakellm.scenario import Kind, Scenario, new_id, scenario_from_keyword
from aibridge.fakellm.tooluse import Responder
from aibridge.fakellm.wire import SSEEvent, cut_index, dumps, last_user_text

log = logging.getLogger("aibridge.fakellm")

_INTERRUPTING = (Kind.STREAM_ERROR, Kind.DROP, Kind.STALL)
# What each provider answers (400) to a body that is not a JSON object.
_UNPARSED = {
    "anthropic": "There was an error parsing the body.",
    "openai": "We could not parse the JSON body of your request.",
}


class FakeLLM:
    """A scripted fake upstream speaking Anthropic Messages, OpenAI Chat Completions and
    OpenAI Responses.

    Scenario choice per generation request, first match wins:

    1. ``key_scenarios[<api key>]`` (persistent, e.g. make one key answer 429);
    2. the FIFO queue filled by :meth:`enqueue` (one scenario per request);
    3. :attr:`responder` (a function of the request body, e.g.
       :func:`aibridge.fakellm.tooluse.tool_caller`), when it returns a scenario;
    4. :attr:`default`;
    5. a ``scenario:<keyword>`` in the last user message (see ``scenario.KEYWORDS``);
    6. :attr:`fallback` (a plain text reply unless changed).

    ``key_scenarios`` of kind HTTP_ERROR also apply to the models and count_tokens routes.
    With ``valid_keys`` set, a request whose key is not in the set gets a 401 in the
    provider's error shape (``x-api-key`` or Bearer for Anthropic routes, Bearer for OpenAI).

    Use :meth:`serve` for a real TCP server, or :attr:`app` with an aiohttp runner of your own
    (pass ``handler_cancellation=True`` so client disconnects are noticed at once).
    """

    def __init__(
        self,
        *,
        valid_keys: Iterable[str] | None = None,
        default: Scenario | None = None,
        keywords: bool = True,
        fixtures: Path | None = None,
    ) -> None:
        self.valid_keys: set[str] | None = set(valid_keys) if valid_keys is not None else None
        self.default: Scenario | None = default
        self.keywords = keywords
        self.fixtures = fixtures
        """The folder ``scenario:fixture:<api>/<name>`` keywords replay files from."""
        self.fallback: Scenario = Scenario.text_reply()
        """The scenario when nothing else chose one."""
        self.key_scenarios: dict[str, Scenario] = {}
        self.queue: deque[Scenario] = deque()
        self.responder: Responder | None = None
        """Chooses a scenario from the request body (None from it: the next rule)."""
        self.requests: list[RecordedRequest] = []
        self.responses: dict[str, dict[str, Any]] = {}
        """Stored Responses API objects, served by ``GET /v1/responses/{id}``."""
        self.disconnects = 0
        """How many responses the client abandoned before they were complete."""
        self.disconnected = asyncio.Event()
        """Set at the first client disconnect (clear it to wait for the next one)."""
        self.websockets_opened = 0
        """How many Responses WebSockets were accepted (``GET /v1/responses`` upgrades)."""
        self.websocket_close_codes: list[int | None] = []
        """The close code of every Responses WebSocket that ended, in order."""
        self.websocket_sent: list[str] = []
        """Every text message the fake sent on a Responses WebSocket, in order."""
        self.websocket_closed = asyncio.Event()
        """Set when a Responses WebSocket ends (clear it to wait for the next one)."""
        self.url = ""
        """``http://host:port`` once :meth:`serve` is running (no ``/v1``)."""
        self._app: web.Application | None = None
        self._changed = asyncio.Event()
        self._active: set[asyncio.Task[Any]] = set()
        self._closing = False

    # ------------------------------------------------------------------ public API
    def enqueue(self, *scenarios: Scenario) -> None:
        """Queue scenarios for the next generation requests, in order."""
        self.queue.extend(scenarios)

    @property
    def app(self) -> web.Application:
        """The aiohttp application (built once)."""
        if self._app is None:
            self._app = self._build_app()
        return self._app

    @property
    def openai_url(self) -> str:
        """The base URL for OpenAI clients (``…/v1``)."""
        return self.url + "/v1"

    def generation_requests(self) -> list[RecordedRequest]:
        """The logged requests that reached a generation API."""
        return [r for r in self.requests if r.api is not None]

    async def wait_for_requests(self, count: int) -> None:
        """Wait until at least ``count`` requests were received (wrap in a timeout)."""
        while len(self.requests) < count:
            await self._changed.wait()

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[FakeLLM]:
        """Run on a real TCP socket (port 0 = ephemeral) and set :attr:`url` meanwhile."""
        runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0]
            url_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            self.url = f"http://{url_host}:{bound[1]}"
            self._closing = False
            yield self
        finally:
            self._closing = True
            for task in list(self._active):
                task.cancel()
            await runner.cleanup()

    # ------------------------------------------------------------------ app
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model_id}", self._model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses", self._responses_ws)
        app.router.add_get("/v1/responses/{response_id}", self._get_response)
        # Last: anything else is logged too, so a test can see every path that reached us.
        app.router.add_route("*", "/{tail:.*}", self._unrouted)
        return app

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        parsed: Any = None
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(body)
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=MultiDict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            json=parsed,
            target=request.raw_path,
        )
        self._log(rec)
        return rec

    def _log(self, rec: RecordedRequest) -> None:
        """Add ``rec`` to the request log and wake :meth:`wait_for_requests`."""
        self.requests.append(rec)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # ------------------------------------------------------------------ responses
    @staticmethod
    def _headers(provider: Literal["anthropic", "openai"]) -> dict[str, str]:
        if provider == "anthropic":
            return {"request-id": new_id("req_011")}
        return {
            "x-request-id": "req_" + new_id("", 32).lower(),
            "openai-processing-ms": "1",
            "openai-version": "2020-10-01",
        }

    def _json(
        self,
        rec: RecordedRequest,
        provider: Literal["anthropic", "openai"],
        body: Any,
        status: int = 200,
        extra: dict[str, str] | None = None,
    ) -> web.Response:
        rec.status = status
        headers = self._headers(provider) | (extra or {})
        return web.Response(
            body=dumps(body), status=status, content_type="application/json", headers=headers
        )

    def _error(
        self,
        rec: RecordedRequest,
        provider: Literal["anthropic", "openai"],
        status: int,
        *,
        scenario: Scenario | None = None,
        message: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> web.Response:
        extra: dict[str, str] = {}
        if scenario is not None:
            message = message or scenario.error_message
            error_type = error_type or scenario.error_type
            code = code or scenario.error_code
            if scenario.retry_after is not None:
                extra["retry-after"] = scenario.retry_after
        if provider == "anthropic":
            body = anthropic.error_body(status, error_type=error_type, message=message)
            if status == 429:
                extra.setdefault("anthropic-ratelimit-requests-remaining", "0")
        else:
            body = openai_chat.error_body(
                status, error_type=error_type, code=code, message=message, param=param
            )
            if status == 429:
                extra.setdefault("x-ratelimit-remaining-requests", "0")
                if scenario is not None and scenario.retry_after is not None:
                    extra.setdefault("x-ratelimit-reset-requests", f"{scenario.retry_after}s")
        return self._json(rec, provider, body, status, extra)

    def _auth_error(
        self, rec: RecordedRequest, provider: Literal["anthropic", "openai"]
    ) -> web.Response | None:
        """401 in the provider's shape when ``valid_keys`` is set and the key is not in it."""
        key = rec.credential() if provider == "anthropic" else bearer(rec.headers)
        if self.valid_keys is not None and key not in self.valid_keys:
            return self._error(rec, provider, 401)
        return None

    def _refusal(
        self, rec: RecordedRequest, provider: Literal["anthropic", "openai"]
    ) -> web.Response | None:
        """What an auxiliary endpoint answers instead of its result: the 401 of
        :meth:`_auth_error`, or the HTTP error scripted for the request's key."""
        if (denied := self._auth_error(rec, provider)) is not None:
            return denied
        if (ks := self._key_scenario(rec)) is not None and ks.kind is Kind.HTTP_ERROR:
            return self._error(rec, provider, ks.status, scenario=ks)
        return None

    def _key_scenario(self, rec: RecordedRequest) -> Scenario | None:
        key = rec.credential()
        return self.key_scenarios.get(key) if key is not None else None

    def _choose(self, rec: RecordedRequest) -> Scenario:
        chosen = self._key_scenario(rec)
        if chosen is None and self.queue:
            chosen = self.queue.popleft()
        if chosen is None and self.responder is not None and isinstance(rec.json, dict):
            chosen = self.responder(rec.json)
        if chosen is None:
            chosen = self.default
        if chosen is None and self.keywords and isinstance(rec.json, dict):
            chosen = scenario_from_keyword(last_user_text(rec.json), self.fixtures)
        if chosen is None:
            chosen = self.fallback
        rec.scenario = chosen
        return chosen

    # ------------------------------------------------------------------ generation
    async def _begin(
        self, request: web.Request, api: Api, required: tuple[str, ...]
    ) -> tuple[RecordedRequest, dict[str, Any], Scenario] | web.StreamResponse:
        """The start every generation request shares: log it, check its key and body,
        choose its scenario; or the response that answers it already (a 401, a 400, a
        scripted HTTP error, a replayed exchange)."""
        rec = await self._record(request)
        provider: Literal["anthropic", "openai"] = "anthropic" if api == "anthropic" else "openai"
        if (denied := self._auth_error(rec, provider)) is not None:
            return denied
        body = rec.json
        if not isinstance(body, dict):
            return self._error(rec, provider, 400, message=_UNPARSED[provider])
        for name in required:
            if name not in body:
                return self._missing(rec, provider, name)
        rec.api = api
        scenario = self._choose(rec)
        if scenario.kind is Kind.HTTP_ERROR:
            return self._error(rec, provider, scenario.status, scenario=scenario)
        if scenario.kind is Kind.REPLAY:
            with self._tracked(rec):
                return await replay(request, rec, scenario, self._headers(provider))
        return rec, body, scenario

    def _missing(
        self, rec: RecordedRequest, provider: Literal["anthropic", "openai"], name: str
    ) -> web.Response:
        """The provider's 400 for a request body without the required member ``name``."""
        if provider == "anthropic":
            return self._error(rec, provider, 400, message=f"{name}: Field required")
        return self._error(
            rec,
            provider,
            400,
            message=f"Missing required parameter: '{name}'.",
            code="missing_required_parameter",
            param=name,
        )

    # ------------------------------------------------------------------ streaming core
    async def _stream(
        self,
        request: web.Request,
        rec: RecordedRequest,
        provider: Literal["anthropic", "openai"],
        scenario: Scenario,
        events: list[SSEEvent],
        error_events: Callable[[int], list[SSEEvent]],
    ) -> web.StreamResponse:
        """Send ``events`` as SSE, applying the scenario's pacing and interruption."""
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                **self._headers(provider),
            },
        )
        rec.status = 200
        cut = cut_index(events, scenario.deltas_before) if scenario.kind in _INTERRUPTING else -1
        with self._tracked(rec):
            await resp.prepare(request)
            for i, event in enumerate(events):
                if i == cut:
                    if scenario.kind is Kind.STREAM_ERROR:
                        for err in error_events(i):
                            await resp.write(err.encode())
                        await resp.write_eof()
                        return resp
                    if scenario.kind is Kind.DROP:
                        return self._drop(request, rec, resp)
                    await self._stall(scenario)
                if scenario.delay:
                    await asyncio.sleep(scenario.delay)
                await resp.write(event.encode())
            if scenario.kind is Kind.LINGER:
                await self._stall(scenario)
            await resp.write_eof()
            return resp

    @contextmanager
    def _tracked(self, rec: RecordedRequest) -> Iterator[None]:
        """Track the running handler (so closing the server can cancel it) and note a client
        that went away while it ran."""
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        try:
            yield
        except (asyncio.CancelledError, ConnectionError):
            self._note_disconnect(rec)
            raise
        finally:
            self._active.discard(task)

    async def _stall(self, scenario: Scenario) -> None:
        scenario.stalled.set()
        if scenario.release is not None:
            await scenario.release.wait()
        else:
            # Until the client disconnects (the handler is cancelled) or the server stops.
            await asyncio.get_running_loop().create_future()

    def _drop(
        self, request: web.Request, rec: RecordedRequest, resp: web.StreamResponse
    ) -> web.StreamResponse:
        rec.dropped = True
        transport = request.transport
        if transport is not None:
            # abort(): no FIN-then-drain, no chunked terminator — the peer sees a reset.
            transport.abort()
        return resp

    def _note_disconnect(self, rec: RecordedRequest) -> None:
        if self._closing or rec.disconnected or rec.dropped:
            return
        rec.disconnected = True
        self.disconnects += 1
        self.disconnected.set()

    async def _blocking(
        self,
        request: web.Request,
        rec: RecordedRequest,
        provider: Literal["anthropic", "openai"],
        scenario: Scenario,
        body: dict[str, Any],
        error_status: int,
    ) -> web.StreamResponse:
        """A non-streaming answer, with the scenario's delay, stall, drop or error."""
        with self._tracked(rec):
            if scenario.delay:
                await asyncio.sleep(scenario.delay)
            if scenario.kind is Kind.STALL:
                await self._stall(scenario)
            if scenario.kind is Kind.STREAM_ERROR:
                return self._error(
                    rec, provider, scenario.status or error_status, scenario=scenario
                )
            if scenario.kind is Kind.DROP:
                payload = dumps(body)
                resp = web.StreamResponse(status=200, headers=self._headers(provider))
                resp.content_type = "application/json"
                resp.content_length = len(payload)
                rec.status = 200
                await resp.prepare(request)
                await resp.write(payload[: len(payload) // 2])
                return self._drop(request, rec, resp)
            return self._json(rec, provider, body)

    # ------------------------------------------------------------------ Anthropic
    async def _messages(self, request: web.Request) -> web.StreamResponse:
        begun = await self._begin(request, "anthropic", ("model", "messages", "max_tokens"))
        if isinstance(begun, web.StreamResponse):
            return begun
        rec, body, scenario = begun
        model = str(body["model"])
        ids = anthropic.Ids(scenario)
        rec.response_id, rec.tool_call_ids = ids.message_id, list(ids.tool_ids)
        if body.get("stream") is True:
            return await self._stream(
                request,
                rec,
                "anthropic",
                scenario,
                anthropic.stream_events(scenario, model, ids),
                lambda _seq: anthropic.stream_error_event(scenario),
            )
        return await self._blocking(
            request, rec, "anthropic", scenario, anthropic.blocking_body(scenario, model, ids), 529
        )

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if (refused := self._refusal(rec, "anthropic")) is not None:
            return refused
        body = rec.json
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return self._error(rec, "anthropic", 400, message="model and messages are required")
        return self._json(rec, "anthropic", anthropic.count_tokens_body(body))

    async def _unrouted(self, request: web.Request) -> web.StreamResponse:
        """A path (or method) no real provider API serves here: logged, then 404."""
        rec = await self._record(request)
        return self._error(
            rec, "openai", 404, message=f"no route {request.method} {request.rel_url.raw_path}"
        )

    # ------------------------------------------------------------------ models
    @staticmethod
    def _models_provider(rec: RecordedRequest) -> Literal["anthropic", "openai"]:
        # Anthropic clients always send anthropic-version; OpenAI clients never do.
        return "anthropic" if "anthropic-version" in rec.headers else "openai"

    async def _models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        provider = self._models_provider(rec)
        if (refused := self._refusal(rec, provider)) is not None:
            return refused
        body = anthropic.models_body() if provider == "anthropic" else openai_chat.models_body()
        return self._json(rec, provider, body)

    async def _model(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        provider = self._models_provider(rec)
        if (denied := self._auth_error(rec, provider)) is not None:
            return denied
        model_id = request.match_info["model_id"]
        found = (
            anthropic.model_body(model_id)
            if provider == "anthropic"
            else openai_chat.model_body(model_id)
        )
        if found is None:
            return self._error(
                rec,
                provider,
                404,
                message=f"model: {model_id}"
                if provider == "anthropic"
                else f"The model '{model_id}' does not exist",
            )
        return self._json(rec, provider, found)

    # ------------------------------------------------------------------ OpenAI chat
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        begun = await self._begin(request, "chat", ("model", "messages"))
        if isinstance(begun, web.StreamResponse):
            return begun
        rec, body, scenario = begun
        model = str(body["model"])
        ids = openai_chat.Ids(scenario)
        rec.response_id, rec.tool_call_ids = ids.completion_id, list(ids.tool_ids)
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(
                request,
                rec,
                "openai",
                scenario,
                openai_chat.stream_events(scenario, model, ids, include_usage=include_usage),
                lambda _seq: openai_chat.stream_error_event(scenario),
            )
        return await self._blocking(
            request, rec, "openai", scenario, openai_chat.blocking_body(scenario, model, ids), 500
        )

    # ------------------------------------------------------------------ OpenAI responses
    async def _responses(self, request: web.Request) -> web.StreamResponse:
        begun = await self._begin(request, "responses", ("model",))
        if isinstance(begun, web.StreamResponse):
            return begun
        rec, body, scenario = begun
        model = str(body["model"])
        ids = openai_responses.Ids(scenario)
        rec.response_id, rec.tool_call_ids = ids.response_id, list(ids.call_ids)
        completed = openai_responses.completed_response(scenario, body, model, ids)
        if body.get("stream") is True:
            events = openai_responses.stream_events(scenario, body, model, ids)
            resp = await self._stream(
                request,
                rec,
                "openai",
                scenario,
                events,
                lambda seq: openai_responses.stream_error_event(scenario, body, model, ids, seq),
            )
            if scenario.kind not in _INTERRUPTING and body.get("store", True) is not False:
                self.responses[ids.response_id] = openai_responses.stored(completed)
            return resp
        if scenario.kind not in _INTERRUPTING and body.get("store", True) is not False:
            self.responses[ids.response_id] = openai_responses.stored(completed)
        return await self._blocking(request, rec, "openai", scenario, completed, 500)

    async def _responses_ws(self, request: web.Request) -> web.StreamResponse:
        """Responses over WebSocket (:mod:`aibridge.fakellm.responses_ws`)."""
        return await responses_ws.serve(self, request)

    async def _get_response(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if (denied := self._auth_error(rec, "openai")) is not None:
            return denied
        response_id = request.match_info["response_id"]
        stored = self.responses.get(response_id)
        if stored is None:
            return self._error(
                rec, "openai", 404, message=f"Response with id '{response_id}' not found."
            )
        return self._json(rec, "openai", stored)
