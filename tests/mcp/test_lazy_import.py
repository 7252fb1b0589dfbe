"""The MCP SDK is imported only when a bridge needs it (start-up time and memory)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import aibridge.server.app, aibridge.server.startup, aibridge.cli
loaded = sorted(m for m in sys.modules if m == "mcp" or m.startswith("mcp."))
print(",".join(loaded) or "none")
"""


def test_starting_a_gateway_does_not_import_the_mcp_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "none", done.stdout
