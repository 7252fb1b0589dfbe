"""A fake GitHub Copilot API: the OpenAI generation APIs at the root (no ``/v1``), the
Copilot passthrough paths, and the checks the real service makes on who is calling.

Every request must carry one of the developer tokens it was given in
``Authorization: Bearer …`` (401 otherwise), and no gateway key anywhere: a request with
``X-AIBridge-Token`` or any ``aib-…`` credential is refused (401) and counted in
:attr:`FakeCopilot.gateway_keys_seen`, so a test fails loudly if one ever leaks upstream.
Generation requests must carry the editor headers Copilot authorises IDE traffic by
(``Editor-Version``, ``Copilot-Integration-Id``; 400 otherwise, as the real API answers).
Everything that arrives is in :attr:`~aibridge.fakellm.FakeLLM.requests`, headers
included, refused requests too::

    async with FakeCopilot(tokens={"ghu_dev"}).serve() as copilot:
        ...  # a copilot provider with base_url=copilot.url
        assert copilot.requests[0].headers["Editor-Version"] == "vscode/1.99.0"
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from aibridge.fakellm.request_log import bearer
from aibridge.fakellm.server import FakeLLM

REQUIRED_GENERATION_HEADERS = ("Editor-Version", "Copilot-Integration-Id")
"""Headers a generation request must carry (the real API answers 400 without them)."""
_GENERATION_PATHS = frozenset({"/chat/completions", "/responses"})
# A gateway key wherever it appears in a header value (bare or after "Bearer ").
_GATEWAY_KEY = re.compile(r"(?:^|[\s,=])aib-", re.IGNORECASE)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeCopilot(FakeLLM):
    """The fake Copilot API; scenarios, queue and request log as in :class:`FakeLLM`.

    ``tokens``: the developer tokens it accepts. :attr:`url` is the base URL of a
    ``copilot`` provider (the API has no version segment).
    """

    def __init__(self, *, tokens: Iterable[str], **kwargs: Any) -> None:
        super().__init__(valid_keys=tokens, **kwargs)
        self.gateway_keys_seen = 0
        """Requests that carried a gateway key (there must never be one)."""

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._check])
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/responses", self._responses)
        app.router.add_get("/models", self._models)
        app.router.add_get("/models/{model_id}", self._model)
        for prefix in ("/agents/", "/mcp/", "/.well-known/"):
            app.router.add_route("*", prefix + "{tail:.*}", self._echo)
        app.router.add_route("*", "/{tail:.*}", self._unrouted)
        return app

    @web.middleware
    async def _check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse (and log) a request without a developer token, with a gateway key, or a
        generation request without the editor headers; hand the rest to the route."""
        problem = self._problem(request)
        if problem is None:
            return await handler(request)
        status, message = problem
        rec = await self._record(request)
        return self._error(rec, "openai", status, message=message)

    def _problem(self, request: web.Request) -> tuple[int, str] | None:
        headers = request.headers
        if "X-AIBridge-Token" in headers or any(
            _GATEWAY_KEY.search(value) for value in headers.values()
        ):
            self.gateway_keys_seen += 1
            return 401, "unauthorized: a gateway key reached the Copilot API"
        token = bearer(headers)
        if not token or self.valid_keys is None or token not in self.valid_keys:
            return 401, "unauthorized: token expired or invalid"
        if request.path in _GENERATION_PATHS:
            for name in REQUIRED_GENERATION_HEADERS:
                if not headers.get(name):
                    return 400, f"bad request: missing {name} header for IDE auth"
        return None

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        """The passthrough paths (agents, MCP, well-known): what arrived, as JSON."""
        rec = await self._record(request)
        return self._json(
            rec,
            "openai",
            {
                "path": request.path,
                "query": request.query_string,
                "method": request.method,
                "body": rec.body.decode("utf-8", "replace"),
            },
        )


__all__ = ["REQUIRED_GENERATION_HEADERS", "FakeCopilot"]
