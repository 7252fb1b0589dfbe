"""Bounded values for metric labels that clients control.

Every distinct label value is a series that Prometheus keeps and ``/metrics`` prints on
every scrape, so a value taken from a request (the model name, the HTTP method) must not
create series without limit: past a cap, values are folded into :data:`OTHER`.
"""

from __future__ import annotations

OTHER = "other"
"""The label value that stands for every value past the cap."""

DEFAULT_MAX_MODELS = 100
# Longer values are never real model names (the longest real ones, Bedrock ARNs, are
# about 100 characters); each would cost its length in every series that carries it.
MAX_LABEL_LENGTH = 128

_HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)


class BoundedLabel:
    """Passes the first ``limit`` distinct values through and maps every later one (and
    any longer than :data:`MAX_LABEL_LENGTH`) to :data:`OTHER`.

    First come, first kept: a value once admitted keeps its own series for the life of
    the process, so a series never changes meaning. A lookup is one set membership test.
    """

    __slots__ = ("_known", "limit")

    def __init__(self, limit: int = DEFAULT_MAX_MODELS) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, value: str) -> str:
        """The label value to use for ``value``."""
        known = self._known
        if value in known:
            return value
        if len(known) >= self.limit or len(value) > MAX_LABEL_LENGTH:
            return OTHER
        known.add(value)
        return value


def method_label(method: str) -> str:
    """An HTTP method as a label: the standard methods as they are, any other token (aiohttp
    accepts arbitrary ones) as :data:`OTHER`."""
    return method if method in _HTTP_METHODS else OTHER
