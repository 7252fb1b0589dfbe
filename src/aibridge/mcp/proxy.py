"""One MCP server session for one bridge: the official SDK's Streamable-HTTP client, run in
a task of its own.

The SDK's client is an anyio context manager whose cancel scopes must be entered and left
by the same task, while a bridge is built in one task (the pool's build) and closed in
another (its retirement). So each :class:`ServerProxy` owns a task that opens the session,
lists the tools, keeps the list fresh (the server's list-changed notification, or a TTL)
and closes the session when told to stop; requests call tools through it from their own
tasks (a call is a message on the session's streams, which any task may send).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    Implementation,
    ResourceLink,
    TextContent,
    TextResourceContents,
    ToolListChangedNotification,
)

from aibridge import tracing
from aibridge.mcp.naming import is_allowed
from aibridge.mcp.settings import MCPOptions, MCPServerSettings
from aibridge.mcp.tools import ToolResult
from mcp import Client

log = logging.getLogger(__name__)

CLIENT_INFO = Implementation(name="aibridge", version="1")
MAX_LIST_PAGES = 100
"""``tools/list`` pages followed at most (a server whose cursors never end is cut here)."""


@dataclass(frozen=True, slots=True)
class RemoteTool:
    """A tool as its MCP server lists it (after the allow/deny filter)."""

    name: str
    description: str
    input_schema: dict[str, Any]


class MCPServerUnavailable(Exception):
    """The server could not be reached or would not list its tools."""


class ServerProxy:
    """The session with one MCP server on behalf of one user.

    :meth:`start` opens it and lists the tools (raises :class:`MCPServerUnavailable`);
    :attr:`tools` is the current filtered list; :meth:`call` calls a tool by its original
    name; :meth:`close` ends the session (bounded, idempotent). ``on_change`` is called
    (in the session task) whenever a refresh changed the list.
    """

    def __init__(
        self,
        server: MCPServerSettings,
        headers: dict[str, str],
        options: MCPOptions,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.server = server
        self._headers = headers
        self._options = options
        self._on_change = on_change
        self.tools: tuple[RemoteTool, ...] = ()
        self.refreshes = 0
        """How many times the list was fetched (the first listing included)."""
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._stale = False
        self._stopping = False
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    def set_on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the session task) whenever a refresh changes the list."""
        self._on_change = callback

    @property
    def name(self) -> str:
        """The server's configured name."""
        return self.server.name

    @property
    def closed(self) -> bool:
        """True once the session task has ended (closed, failed or cancelled)."""
        return self._task is not None and self._task.done()

    async def start(self) -> None:
        """Open the session and list the tools, within ``init_timeout``."""
        self._task = asyncio.create_task(self._run(), name=f"mcp-session {self.server.name}")
        try:
            async with asyncio.timeout(self._options.init_timeout):
                await self._ready.wait()
        except TimeoutError:
            await self.close()
            raise MCPServerUnavailable(
                f"MCP server {self.server.name!r} did not list its tools within "
                f"{self._options.init_timeout:g} s"
            ) from None
        if self._failure is not None:
            await self.close()
            raise MCPServerUnavailable(
                f"MCP server {self.server.name!r} is unavailable: {_describe(self._failure)}"
            ) from self._failure

    async def _run(self) -> None:
        timeout = httpx2.Timeout(self._options.init_timeout, read=self._options.call_timeout)
        try:
            async with (
                httpx2.AsyncClient(headers=self._headers, timeout=timeout) as http,
                Client(
                    streamable_http_client(self.server.url, http_client=http),
                    client_info=CLIENT_INFO,
                    cache=None,
                    message_handler=self._on_message,
                ) as client,
            ):
                self._client = client
                # Subscribe before listing, so a change between the two is not missed.
                listening = asyncio.Event()
                listener = asyncio.create_task(self._listen(client, listening))
                try:
                    await listening.wait()
                    await self._refresh(client)
                    self._ready.set()
                    await self._keep_fresh(client)
                finally:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await listener
        except Exception as exc:
            if not self._ready.is_set():
                self._failure = exc
            else:
                log.warning(
                    "MCP session ended",
                    extra={"mcp_server": self.server.name, "error": _describe(exc)},
                )
        finally:
            self._client = None
            self._ready.set()

    async def _keep_fresh(self, client: Client) -> None:
        """Until told to stop: refetch the list when it changed or its TTL ran out."""
        while not self._stopping:
            try:
                async with asyncio.timeout(self._options.tools_ttl):
                    await self._wake.wait()
            except TimeoutError:
                self._stale = True
            self._wake.clear()
            if self._stopping:
                return
            if self._stale:
                self._stale = False
                try:
                    async with asyncio.timeout(self._options.init_timeout):
                        await self._refresh(client)
                except Exception as exc:
                    # Keep the old list: a refresh that fails is retried at the next TTL.
                    log.warning(
                        "MCP tool list refresh failed",
                        extra={"mcp_server": self.server.name, "error": _describe(exc)},
                    )

    async def _listen(self, client: Client, listening: asyncio.Event) -> None:
        """2026-era servers announce list changes on a ``subscriptions/listen`` stream
        (earlier ones send a notification, see :meth:`_on_message`); ``listening`` is set
        once the server acknowledged the subscription, or it failed (older servers)."""
        try:
            async with client.listen(tools_list_changed=True) as sub:
                listening.set()
                async for _event in sub:
                    self._mark_stale()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug(
                "MCP list-changed subscription unavailable",
                extra={"mcp_server": self.server.name, "error": _describe(exc)},
            )
        finally:
            listening.set()

    async def _on_message(self, message: object) -> None:
        if isinstance(message, ToolListChangedNotification):
            self._mark_stale()

    def _mark_stale(self) -> None:
        self._stale = True
        self._wake.set()

    async def _refresh(self, client: Client) -> None:
        """Fetch every page of ``tools/list`` and keep the tools the filters allow."""
        tracer = tracing.TRACER
        if tracer is None or self.refreshes:
            await self._list(client)
            return
        # The first listing runs inside start()'s StreamableHTTPServerProxy.Init span
        # (this session task copied its context); later refreshes are not traced.
        span = tracer.start(tracing.MCP_FETCH_TOOLS, {"mcp_server_name": self.server.name})
        try:
            await self._list(client)
            span.set_attribute("mcp_tool_count", len(self.tools))
        except BaseException as exc:
            tracer.fail(span, _describe(exc))
            raise
        finally:
            span.end()

    async def _list(self, client: Client) -> None:
        listed = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        else:
            log.warning(
                "MCP server kept paginating its tools; using the first pages",
                extra={"mcp_server": self.server.name, "pages": MAX_LIST_PAGES},
            )
        s = self.server
        tools = tuple(
            RemoteTool(t.name, t.description or "", dict(t.input_schema))
            for t in listed
            if is_allowed(t.name, s.tool_allow, s.tool_deny, server=s.name)
        )
        self.refreshes += 1
        changed = tools != self.tools
        self.tools = tools
        log.debug(
            "MCP tools listed",
            extra={"mcp_server": s.name, "tools": len(tools), "listed": len(listed)},
        )
        if changed and self._on_change is not None and self.refreshes > 1:
            self._on_change()

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call tool ``name`` (its original name); never raises for a failed call (the
        result then says what failed, for the model and the record)."""
        client = self._client
        if client is None:
            return _failed(f"MCP server {self.server.name!r} session is closed")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._options.call_timeout):
                result = await client.call_tool(name, arguments)
        except TimeoutError:
            return _failed(f"tool call timed out after {self._options.call_timeout:g} s")
        except Exception as exc:
            return _failed(f"calling tool: {_describe(exc)}")
        finally:
            log.debug(
                "MCP tool called",
                extra={
                    "mcp_server": self.server.name,
                    "tool": name,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        return ToolResult(result_text(result), is_error=bool(result.is_error))

    async def close(self) -> None:
        """End the session: bounded by ``close_timeout``, then its task is cancelled."""
        task = self._task
        if task is None or task.done():
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=self._options.close_timeout)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=self._options.close_timeout)


def _failed(message: str) -> ToolResult:
    return ToolResult(f"Error: {message}", is_error=True, error=message)


def _describe(exc: BaseException) -> str:
    """An exception as one line; exception groups (anyio) by their first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def result_text(result: CallToolResult) -> str:
    """An MCP tool result as the text a model reads.

    Text parts as they are; resources inline with their MIME type and URI; media the
    gateway cannot pass on as a short note (so the model knows something was there); no
    content but structured content: that content as JSON.
    """
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource):
            res = block.resource
            if isinstance(res, TextResourceContents):
                body = res.text
            elif isinstance(res, BlobResourceContents):
                body = res.blob
            else:  # pragma: no cover - the SDK knows only these two
                body = ""
            parts.append(f"Resource (MIME: {res.mime_type}, URI: {res.uri}): {body}")
        elif isinstance(block, ResourceLink):
            parts.append(f"Resource link: {block.uri} ({block.name})")
        elif isinstance(block, ImageContent | AudioContent):
            parts.append(f"[{block.type} content ({block.mime_type}) not shown]")
        else:  # pragma: no cover - future content types
            parts.append(f"[{getattr(block, 'type', 'unknown')} content not shown]")
    if not parts and result.structured_content is not None:
        parts.append(orjson.dumps(result.structured_content).decode())
    return "\n".join(parts) if parts else "(the tool returned no content)"
