"""A fake model that calls tools and then answers from their results, whatever the API.

:func:`tool_caller` builds a responder for :attr:`FakeLLM.responder`: given a request body
(Messages, Chat Completions or Responses), while the conversation since the last user
prompt holds fewer tool results than the script has calls, it calls the next tool (when the
request offers it); then it answers with text that quotes every result. It looks only at
the request, so it serves a gateway's inner loop and a real agent's conversation alike,
however many other requests the agent sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aibridge.fakellm.scenario import Scenario, ToolCall

Responder = Callable[[dict[str, Any]], Scenario | None]
"""A request body -> the scenario that answers it (None: let the next rule choose)."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def tool_results(body: dict[str, Any]) -> list[str]:
    """The tool results the conversation holds after its last user prompt, oldest first."""
    results: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if not isinstance(msg, dict):
                continue
            role, content = msg.get("role"), msg.get("content")
            if role == "tool":
                results.append(_text(content))
            elif role == "user" and isinstance(content, list):
                blocks = [b for b in content if isinstance(b, dict)]
                found = [b for b in blocks if b.get("type") == "tool_result"]
                if found:
                    results.extend(_text(b.get("content")) for b in found)
                elif any(b.get("type") == "text" for b in blocks):
                    results = []
            elif role == "user":
                results = []
        return results
    items = body.get("input")
    if isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call_output":
                results.append(_text(item.get("output")))
            elif item.get("role") == "user":
                results = []
    return results


def offered_tools(body: dict[str, Any]) -> set[str]:
    """The names of the tools a request offers (any of the three APIs)."""
    names: set[str] = set()
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function")
        name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
        if isinstance(name, str):
            names.add(name)
    return names


def tool_caller(
    calls: Sequence[ToolCall],
    *,
    answer: str = "The tools said: {results}",
    text: str = "Let me check with the tool.",
) -> Responder:
    """A responder that makes ``calls`` one per turn, then answers ``answer`` with
    ``{results}`` replaced by the results joined with `` | ``. A request that does not
    offer the next tool is left to the other rules."""

    def respond(body: dict[str, Any]) -> Scenario | None:
        done = tool_results(body)
        if len(done) < len(calls):
            call = calls[len(done)]
            if call.name not in offered_tools(body):
                return None
            return Scenario.tool_call(call, text=text)
        return Scenario.text_reply(answer.format(results=" | ".join(done)))

    return respond
