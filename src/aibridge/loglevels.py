"""Per-logger levels as ``--log-levels`` and ``AIBRIDGE_LOG_LEVELS`` give them.

A bottom-layer module: settings validate the value without importing the logging setup
(and with it the interception pipeline).
"""

from __future__ import annotations

LEVELS = ("debug", "info", "warning", "error")


class LogLevelsError(ValueError):
    """A ``--log-levels`` value that does not parse; the message names the fix."""


def parse_log_levels(text: str) -> dict[str, str]:
    """``"aibridge.pool=debug,aiosqlite=info"`` as {logger: level}; :class:`LogLevelsError`
    for anything else."""
    levels: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, level = item.partition("=")
        name, level = name.strip(), level.strip().lower()
        if not sep or not name or level not in LEVELS:
            raise LogLevelsError(
                f"bad log level entry {item!r}: expected LOGGER=LEVEL with LEVEL one of "
                f"{', '.join(LEVELS)} (e.g. aibridge.pool=debug,aiosqlite=info)"
            )
        levels[name] = level
    return levels
