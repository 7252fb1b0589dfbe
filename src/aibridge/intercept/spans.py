"""The spans of one traced interception (only made when tracing is on).

The tree (reference §6.2), under the data plane's root span ``Intercept``:
``Intercept.ProcessRequest`` from the accepted request to its end, one
``Intercept.ProcessRequest.Upstream`` per upstream call (each turn of the injected-tool
loop too) and one ``Intercept.ProcessRequest.ToolCall`` per injected tool call. Every one
of them carries the interception's attributes (``interception_id``, ``user_id``,
``provider``, ``model``, ``streaming``, ``request_path``, ``api``; ``aws_bedrock`` on
Anthropic-protocol providers, ``bedrock_protocol`` on Bedrock ones).

Status rules: an interception that ended with an error type marks ``Intercept`` and
``ProcessRequest`` Error; a blocking ``Upstream`` span (it covers the call and reading
the body) is Error when the call failed or answered an error status; a streaming one
covers only opening the stream, so it is Error only when the stream did not open.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from aibridge import tracing
from aibridge.intercept.interception import Interception, Outcome
from aibridge.mcp.tools import MCPTool

MAX_TOOL_INPUT = 4096
"""Characters of a tool call's arguments kept in ``mcp_input`` (the rest cut)."""


class InterceptionTrace:
    """The spans of one interception: its root (the data plane's), ProcessRequest, and
    the helpers that start and end the upstream and tool-call spans under it."""

    __slots__ = ("attributes", "process", "root", "tracer")

    def __init__(self, tracer: tracing.Tracer, ix: Interception, request: web.Request) -> None:
        self.tracer = tracer
        provider = ix.provider
        attributes: dict[str, tracing.AttributeValue] = {
            "request_path": request.path,
            "interception_id": str(ix.id),
            "user_id": str(ix.actor.user_id),
            "provider": provider.name,
            "model": ix.model,
            "streaming": ix.request.stream,
            "api": ix.api,
        }
        if provider.family == "anthropic":
            attributes["aws_bedrock"] = provider.bedrock is not None
        if provider.bedrock is not None:
            attributes["bedrock_protocol"] = provider.bedrock.protocol
        self.attributes = attributes
        self.root = tracer.current()
        """The data plane's ``Intercept`` span (None when served outside the data plane)."""
        if self.root is not None:
            self.root.set_attributes(attributes)
        self.process: tracing.Span | None = None

    def fail_root(self, message: str) -> None:
        """The request was refused before it was processed (a limit)."""
        if self.root is not None:
            self.tracer.fail(self.root, message)

    def begin(self) -> None:
        """Start ``Intercept.ProcessRequest`` (the request was admitted)."""
        self.process = self.tracer.start(tracing.PROCESS_REQUEST, self.attributes, parent=self.root)

    def end(self, outcome: Outcome) -> None:
        """End ``ProcessRequest``; an error outcome marks it and the root Error."""
        process = self.process
        if process is None:
            return
        if outcome.error_type is not None:
            message = outcome.error_message or outcome.error_type
            self.tracer.fail(process, message)
            if self.root is not None:
                self.tracer.fail(self.root, message)
        process.end()

    def upstream(self) -> tracing.Span:
        """Start one ``Intercept.ProcessRequest.Upstream`` span."""
        return self.tracer.start(tracing.UPSTREAM, self.attributes, parent=self.process)

    def upstream_answered(
        self, span: tracing.Span, sent: aiohttp.ClientResponse | tuple[web.Response, Outcome]
    ) -> None:
        """What the upstream answered (before any body was read): its status, or why no
        answer came (then the span is Error)."""
        if isinstance(sent, aiohttp.ClientResponse):
            span.set_attribute("http.response.status_code", sent.status)
            if sent.status >= 400:
                self.tracer.fail(span, f"upstream answered HTTP {sent.status}")
        else:
            self.tracer.fail(span, sent[1].error_message or "upstream call failed")

    def upstream_read(self, span: tracing.Span, outcome: Outcome) -> None:
        """A blocking call's body was read: a relay that failed (too large, timed out)
        marks the span Error (an error status was marked by :meth:`upstream_answered`)."""
        if outcome.error_type is not None:
            self.tracer.fail(span, outcome.error_message or outcome.error_type)

    def tool_call(self, tool: MCPTool, arguments_raw: str) -> tracing.Span:
        """Start one ``Intercept.ProcessRequest.ToolCall`` span."""
        attributes = dict(self.attributes)
        attributes.update(
            mcp_server_name=tool.server_name,
            mcp_server_url=tool.server_url,
            mcp_tool_name=tool.name,
            mcp_input=arguments_raw[:MAX_TOOL_INPUT],
        )
        return self.tracer.start(tracing.TOOL_CALL, attributes, parent=self.process)
