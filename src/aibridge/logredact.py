"""Secret redaction for every log line the process writes, third-party loggers included.

Two nets, applied by the log formatters (:mod:`aibridge.telemetry`) to the finished line:

* **known secrets**: every plaintext that goes through :func:`aibridge.store.crypto.seal`
  or ``unseal`` (provider keys, MCP tokens and headers, Bedrock secrets, stored encrypted
  or not) is registered here, and any occurrence is masked, whatever logger printed it
  (aiosqlite's debug logger prints the parameters of every statement, the stored secret
  among them);
* **shapes**: gateway keys (``aib-<id>-<secret>``), ``sk-…`` provider keys, ``Bearer``
  credentials and the values of credential-named fields (``Authorization: …``,
  ``"x-api-key": "…"``, ``password=…``), so a key a client sent (its own BYOK key, a key
  pasted into a prompt) is masked too.

Masked values keep the hint the rest of the gateway shows (``sk-…abcd``,
:func:`~aibridge.secrets_mask.mask_secret`).
"""

from __future__ import annotations

import re
import threading

from aibridge.secrets_mask import mask_secret

MIN_KNOWN_SECRET = 8
"""Shorter registered values are not masked: they would mask ordinary words."""
MAX_KNOWN_SECRETS = 10_000
"""Bound on the registry (secrets are few; a flood of distinct ones is not kept)."""

# Shapes of secrets that are masked even when the gateway never stored them.
_SHAPES = re.compile(
    r"aib-[0-9A-Za-z]{1,32}-[A-Za-z0-9_\-]{4,}"  # gateway keys
    r"|\bsk-[A-Za-z0-9_\-]{8,}"  # OpenAI / Anthropic style keys
    r"|(?<=[Bb]earer )[^\s\"',;\\]{4,}"  # Authorization: Bearer …
    r"|(?i:(?<=authorization)|(?<=api-key)|(?<=api_key)|(?<=token)|(?<=password)"
    r"|(?<=secret)|(?<=secret_access_key)|(?<=session_token))"
    r"[\"']?\s*[:=]\s*[\"']?(?!bearer )(?![Bb]earer )[^\s\"',;&}\\]{4,}"
)
_FIELD_VALUE = re.compile(r"^([\"']?\s*[:=]\s*[\"']?)(.*)$", re.S)


class KnownSecrets:
    """The plaintext secrets the process handles, matched as one compiled pattern.

    Thread-safe: aiosqlite logs from its own thread. The pattern is rebuilt lazily on the
    first line logged after a change, never on the request path.
    """

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        """Register ``secret`` (ignored when too short, or when the registry is full)."""
        if len(secret) < MIN_KNOWN_SECRET or secret in self._secrets:
            return
        with self._lock:
            if len(self._secrets) < MAX_KNOWN_SECRETS:
                self._secrets.add(secret)
                self._pattern = None

    def pattern(self) -> re.Pattern[str] | None:
        """One alternation of every registered secret (longest first), or None."""
        pattern = self._pattern
        if pattern is None and self._secrets:
            with self._lock:
                ordered = sorted(self._secrets, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(map(re.escape, ordered)))
        return pattern


KNOWN_SECRETS = KnownSecrets()
"""The process's registry (fed by :mod:`aibridge.store.crypto`)."""


def remember_secret(secret: str) -> None:
    """Mask ``secret`` in every later log line."""
    KNOWN_SECRETS.add(secret)


def _mask_shape(match: re.Match[str]) -> str:
    text = match.group(0)
    field = _FIELD_VALUE.match(text)
    if field is not None and field.group(1):
        return field.group(1) + mask_secret(field.group(2))
    return mask_secret(text)


# What every branch of _SHAPES needs literally: "aib-", "sk-", "[Bb]earer " (case-sensitive),
# or one of these keywords in any case (secret_access_key and session_token contain
# "secret" and "token").
_CASED_TRIGGERS = ("aib-", "sk-", "earer ")
_KEYWORDS = ("token", "secret", "password", "authorization", "api-key", "api_key")


def may_hold_shape(text: str) -> bool:
    """False only when :data:`_SHAPES` cannot match ``text``: it holds none of the literals
    some branch of the pattern needs. Python's ``re`` tries every branch at every position
    (0.3 µs a character for this pattern: 150 µs for a 500-character line), while these
    substring tests cost about a microsecond, and most log lines hold none of them.

    Non-ASCII text always answers True: under ``re.IGNORECASE`` a few non-ASCII letters
    match ASCII ones (the Kelvin sign matches ``k``, the long s matches ``s``), which
    ``str.lower()`` would not reveal."""
    if not text.isascii():
        return True
    for trigger in _CASED_TRIGGERS:
        if trigger in text:
            return True
    low = text.lower()
    # A loop, not any(<generator>): this runs for every log line and field.
    for keyword in _KEYWORDS:  # noqa: SIM110
        if keyword in low:
            return True
    return False


def _mask_known(match: re.Match[str]) -> str:
    return mask_secret(match.group(0))


def redact(text: str) -> str:
    """``text`` with every known secret and every secret-shaped value masked."""
    known = KNOWN_SECRETS.pattern()
    if known is not None:
        text = known.sub(_mask_known, text)
    if not may_hold_shape(text):
        return text
    return _SHAPES.sub(_mask_shape, text)
