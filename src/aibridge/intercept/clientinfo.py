"""Which coding agent sent a request, and its session id."""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

# (User-Agent prefix, lower-cased) -> client name; first match wins.
_UA_PREFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("xum/", "mux/"), "Mux"),
    (("claude",), "Claude Code"),
    (("codex",), "Codex"),
    (("zed/",), "Zed"),
    (("githubcopilotchat/",), "GitHub Copilot (VS Code)"),
    (("copilot/",), "GitHub Copilot (CLI)"),
    (("kilo-code/",), "Kilo Code"),
    (("roo-code/",), "Roo Code"),
    (("coder-agents/",), "Coder Agents"),
    (("charm crush/", "charm-crush/"), "Charm Crush"),
    (("opencode/",), "OpenCode"),
    (("junie:",), "Junie"),
)

# Client -> headers holding its session id, in order of preference.
_SESSION_HEADERS: dict[str, tuple[str, ...]] = {
    "Claude Code": ("X-Claude-Code-Session-Id",),
    "Codex": ("session-id", "session_id"),
    "Mux": ("X-Mux-Workspace-Id",),
    "GitHub Copilot (VS Code)": ("x-interaction-id",),
    "GitHub Copilot (CLI)": ("X-Client-Session-Id",),
    "Kilo Code": ("X-KILOCODE-TASKID",),
    "Coder Agents": ("X-Coder-Chat-Id",),
    "OpenCode": ("X-OpenCode-Session", "x-session-affinity"),
}
_LEGACY_SESSION = re.compile(r"_session_(.+)$")


# (User-Agent, originator) as sent -> client name or None (no prefix matched): a client
# sends the same User-Agent on every request. Bounded, since the values come from clients.
_BY_AGENT: dict[tuple[str, str], str | None] = {}
_BY_AGENT_MAX = 1024


def _client_by_agent(ua: str, originator: str) -> str | None:
    ua = ua.lower()
    originator = originator.lower()
    for prefixes, name in _UA_PREFIXES:
        if ua.startswith(prefixes):
            return name
        if name in ("Kilo Code", "Roo Code") and originator == prefixes[0].rstrip("/"):
            return name
    return None


def detect_client(headers: Mapping[str, str]) -> str:
    """Client name from the User-Agent (and a few client-specific headers)."""
    key = (headers.get("User-Agent", ""), headers.get("originator", ""))
    try:
        name = _BY_AGENT[key]
    except KeyError:
        name = _client_by_agent(*key)
        if len(_BY_AGENT) < _BY_AGENT_MAX:
            _BY_AGENT[key] = name
    if name is not None:
        return name
    if "x-cursor-client-version" in headers:
        return "Cursor"
    return "Unknown"


def session_id(client: str, headers: Mapping[str, str], metadata_user_id: str | None) -> str | None:
    """The client's session id, or None. Claude Code falls back to ``metadata.user_id``."""
    for header in _SESSION_HEADERS.get(client, ()):
        value = headers.get(header, "").strip()
        if value:
            return value
    if client == "Claude Code" and metadata_user_id:
        return _session_from_user_id(metadata_user_id)
    return None


def _session_from_user_id(user_id: str) -> str | None:
    text = user_id.strip()
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        value = obj.get("session_id") if isinstance(obj, dict) else None
        return str(value).strip() or None if value else None
    match = _LEGACY_SESSION.search(text)
    return match.group(1).strip() or None if match else None
