"""Serving a test double's aiohttp app on an ephemeral loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


@asynccontextmanager
async def serve_on_loopback(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on ``127.0.0.1`` at a port the kernel picks, for the duration of the
    block; yields the base URL (``http://127.0.0.1:PORT``, no trailing slash).
    ``runner_options`` go to :class:`aiohttp.web.AppRunner` (signals are never handled)."""
    runner = web.AppRunner(app, handle_signals=False, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
