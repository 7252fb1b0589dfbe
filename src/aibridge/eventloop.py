"""Running a coroutine on a fresh event loop: the gateway's, the CLI's and the workers'.

A bottom-layer module, so that a CLI command does not import the server to get a loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop (uvloop when available)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop missing on this platform
        return asyncio.run(coro)
