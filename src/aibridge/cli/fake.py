"""``aibridge fake-upstream``: run the scripted fake LLM provider for demos and manual tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path

import click

from aibridge.cli import main
from aibridge.cli.common import async_command, fail
from aibridge.fakellm import KEYWORDS, FakeLLM, Scenario


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port); raises ``click.BadParameter``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--listen")
    return host.strip("[]"), int(port_text)


def banner(fake: FakeLLM) -> str:
    """The text printed at start-up: base URLs and the scenario keywords."""
    width = max(len(k) for k in KEYWORDS)
    lines = [
        f"fakellm listening on {fake.url}",
        "",
        "Point clients (or an aibridge provider's base URL) at it:",
        f"  ANTHROPIC_BASE_URL={fake.url}",
        f"  OPENAI_BASE_URL={fake.openai_url}",
        "",
        "Routes: POST /v1/messages, /v1/messages/count_tokens, /v1/chat/completions,",
        "        /v1/responses; GET /v1/models (Anthropic shape when anthropic-version is",
        "        sent), /v1/responses/{id}",
        "",
        "Put scenario:<keyword> in the last user message to choose the behaviour:",
        *(f"  {word.ljust(width)}  {what}" for word, what in KEYWORDS.items()),
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def run_fake_upstream(
    host: str,
    port: int,
    *,
    valid_keys: list[str] | None = None,
    delay: float = 0.0,
    fixtures: Path | None = None,
    stop: asyncio.Event | None = None,
    echo: Callable[[str], None] = click.echo,
) -> None:
    """Serve a :class:`FakeLLM` until SIGINT/SIGTERM (or ``stop`` is set); ``fixtures`` is
    the folder ``scenario:fixture:<api>/<name>`` replays captured exchanges from."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    fake = FakeLLM(valid_keys=valid_keys or None, fixtures=fixtures)
    if delay > 0:
        # Keyword scenarios still win; only the plain-text fallback is paced.
        fake.fallback = Scenario.slow(delay=delay)
    try:
        async with fake.serve(host, port):
            echo(banner(fake))
            await stop.wait()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --listen")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


@main.command("fake-upstream")
@click.option(
    "--listen",
    default="127.0.0.1:9999",
    show_default=True,
    help="HOST:PORT to listen on (port 0 picks a free one).",
)
@click.option(
    "--valid-key",
    "valid_keys",
    multiple=True,
    help="Accept only this API key (repeatable); others get a 401. Default: accept any.",
)
@click.option(
    "--delay",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds between streamed events of plain replies (makes streaming visible).",
)
@click.option(
    "--fixtures",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of captured exchanges (e.g. tests/fixtures) that scenario:fixture:<api>/<name>"
    " replays byte for byte.",
)
@async_command
async def fake_upstream(
    listen: str, valid_keys: tuple[str, ...], delay: float, fixtures: Path | None
) -> None:
    """Run a scripted fake LLM provider (Anthropic + OpenAI wire formats) until Ctrl-C.

    It answers /v1/messages, /v1/chat/completions and /v1/responses, streaming or not, with
    deterministic text, reasoning, tool calls, cache usage, errors, drops and stalls, chosen
    by a scenario:<keyword> in the last user message. Use it as the upstream of an aibridge
    provider to try the gateway without real provider keys.
    """
    host, port = parse_listen(listen)
    await run_fake_upstream(host, port, valid_keys=list(valid_keys), delay=delay, fixtures=fixtures)
