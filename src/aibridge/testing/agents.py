"""Real coding agents (Claude Code, Codex CLI) for the tests that drive them through the
gateway: where the binaries are, and running one to completion (bounded).

Install them with ``npm install -g --prefix /tmp/agents @anthropic-ai/claude-code @openai/codex``
or point ``AIBRIDGE_AGENTS_BIN`` at a ``bin`` folder (``.ci/run`` installs pinned versions).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

AGENT_TIMEOUT = 120.0
"""Upper bound of one agent run, in seconds."""

DEFAULT_AGENTS_BIN = "/tmp/agents/bin"


def find_agent(name: str) -> str | None:
    """The path of agent ``name`` (``claude``, ``codex``): in ``AIBRIDGE_AGENTS_BIN`` (default
    ``/tmp/agents/bin``), else on ``PATH``; None when it is not installed."""
    folder = os.environ.get("AIBRIDGE_AGENTS_BIN", DEFAULT_AGENTS_BIN)
    return shutil.which(name, path=folder) or shutil.which(name)


def install_hint(package: str) -> str:
    """How to install the npm ``package`` so that :func:`find_agent` finds it."""
    return (
        f"npm install -g --prefix /tmp/agents {package}, or set AIBRIDGE_AGENTS_BIN to the "
        "folder holding the binary"
    )


async def run_agent(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run an agent to completion: (exit status, stdout, stderr). Killed after
    :data:`AGENT_TIMEOUT` seconds (the ``TimeoutError`` propagates)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(AGENT_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def agent_env(home: Path) -> dict[str, str]:
    """A minimal environment for an agent run: ``PATH``, a private ``HOME``, no colours."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TERM": "dumb",
        "NO_COLOR": "1",
    }
