"""Injected tool names and the allow/deny filter.

An injected tool is named ``bmcp_<server>_<tool>`` (the prefix mirrors Claude Code's
``mcp__``, so a model and a reader both see where a tool comes from), sanitised to the
characters every provider accepts in a function name (``[a-zA-Z0-9_-]``) and cut to the
64 characters they allow. Two tools that end up with the same name (long names cut at the
same place, or names differing only in characters the sanitiser replaced) are told apart
by a short hash of their real identity, so names stay stable across bridges and restarts.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

PREFIX = "bmcp_"
MAX_NAME_LENGTH = 64
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def tool_id(server: str, tool: str) -> str:
    """``bmcp_<server>_<tool>``, sanitised to ``[a-zA-Z0-9_-]`` and at most 64 characters."""
    return _UNSAFE.sub("_", f"{PREFIX}{server}_{tool}")[:MAX_NAME_LENGTH]


def _suffixed(base: str, server: str, tool: str, attempt: int) -> str:
    digest = hashlib.sha256(f"{server}\0{tool}\0{attempt}".encode()).hexdigest()[:8]
    suffix = f"_{digest}"
    return base[: MAX_NAME_LENGTH - len(suffix)] + suffix


def assign_ids(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A unique injected name for every ``(server, tool)`` pair.

    Pairs are taken in sorted order, so the first pair keeps the plain name and each later
    one that collides gets a hash suffix: the same set of tools always gets the same names.
    """
    taken: set[str] = set()
    out: dict[tuple[str, str], str] = {}
    for server, tool in sorted(set(pairs)):
        name = tool_id(server, tool)
        attempt = 0
        while name in taken:
            attempt += 1
            name = _suffixed(tool_id(server, tool), server, tool, attempt)
        if attempt:
            log.warning(
                "injected tool name collision; disambiguated",
                extra={"mcp_server": server, "tool": tool, "injected_name": name},
            )
        taken.add(name)
        out[(server, tool)] = name
    return out


def is_allowed(
    tool: str, allow: re.Pattern[str] | None, deny: re.Pattern[str] | None, *, server: str = ""
) -> bool:
    """Whether ``tool`` (its original MCP name) passes the server's filters: the deny regex
    wins over the allow regex; with an allow regex a tool must match it; with neither,
    every tool passes. Regexes match anywhere in the name (``re.search``); anchor them
    (``^…$``) to match whole names."""
    denied = deny is not None and deny.search(tool) is not None
    if denied:
        if allow is not None and allow.search(tool) is not None:
            log.debug(
                "MCP tool matches both allow and deny; denied",
                extra={"mcp_server": server, "tool": tool},
            )
        return False
    return allow is None or allow.search(tool) is not None
