"""What every part of the benchmark agrees on: the two APIs, their bodies, loopback, CPUs.

Kept free of heavy imports so that each child role starts fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
RELAY_CPU = 0
"""The bare relay and the gateway run here (one at a time under load)."""
CLIENT_CPU = 1
"""The upstream and the load generator run here."""
START_TIMEOUT = 30.0
UPSTREAM_KEY = "sk-bench-fake-upstream-key"
ANTHROPIC_STREAM_EVENTS = 50
OPENAI_STREAM_CHUNKS = 20
"""``chat.completion.chunk`` events before the usage chunk and ``[DONE]``."""
REPO_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


@dataclass(frozen=True)
class Api:
    """One upstream API as the benchmark drives it."""

    name: str
    """``openai`` or ``anthropic`` (the label in every table)."""
    path: str
    """Request path on the upstream and the bare relay; the gateway adds ``/<provider>``."""
    provider: str
    """Provider name created in aibridge for this API."""
    provider_type: str
    base_suffix: str
    """Appended to the upstream URL to form the provider's base URL."""
    model: str

    def body(self, stream: bool) -> bytes:
        """The fixed, compact request body (as SDKs send it)."""
        messages = [{"role": "user", "content": "Say hello in a few words."}]
        body: dict[str, Any]
        if self.name == "anthropic":
            body = {
                "model": self.model,
                "max_tokens": 1024,
                "stream": stream,
                "metadata": {"user_id": "bench"},
                "messages": messages,
            }
        else:
            body = {"model": self.model, "stream": stream, "messages": messages}
            if stream:
                # Asked for by the client, so the gateway relays the body unchanged.
                body["stream_options"] = {"include_usage": True}
        return json.dumps(body, separators=(",", ":")).encode()

    def response_ok(self, stream: bool, status: int, data: bytes) -> bool:
        """Whether ``data`` is a complete, successful response of this API."""
        if status != 200:
            return False
        if stream:
            tail = b'{"type":"message_stop"}' if self.name == "anthropic" else b"data: [DONE]"
            return data.rstrip().endswith(tail)
        marker = b'"type":"message"' if self.name == "anthropic" else b'"chat.completion"'
        return marker in data

    def upstream_headers(self) -> dict[str, str]:
        """Headers a client sends straight to the upstream (direct and bare targets)."""
        headers = {"Content-Type": "application/json"}
        if self.name == "anthropic":
            headers["x-api-key"] = UPSTREAM_KEY
            headers["anthropic-version"] = "2023-06-01"
        else:
            headers["Authorization"] = f"Bearer {UPSTREAM_KEY}"
        return headers

    def gateway_headers(self, token: str) -> dict[str, str]:
        """Headers a client sends to aibridge with a user token."""
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        if self.name == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
        return headers


APIS: dict[str, Api] = {
    "openai": Api(
        name="openai",
        path="/v1/chat/completions",
        provider="bench-openai",
        provider_type="openai",
        base_suffix="/v1",
        model="gpt-4.1-mini",
    ),
    "anthropic": Api(
        name="anthropic",
        path="/v1/messages",
        provider="bench-anthropic",
        provider_type="anthropic",
        base_suffix="",
        model="claude-sonnet-4-5-20250929",
    ),
}
MODES = ("blocking", "stream")


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for children: this one, plus the repo root on PYTHONPATH for ``bench``."""
    env = dict(os.environ)
    root = str(REPO_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # Never let a proxy setting send loopback traffic elsewhere.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for key in ("AIBRIDGE_DATABASE_URL", "AIBRIDGE_LISTEN", "AIBRIDGE_DATA_DIR"):
        env.pop(key, None)
    # Tracing only where a target asks for it (--tracing), never from the shell's OTEL_*.
    for key in [k for k in env if k.startswith("OTEL_")]:
        del env[key]
    if extra:
        env.update(extra)
    return env


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when available (as the gateway does)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)
