"""Which models a user or key may call (the ``allowed_models`` patterns).

A pattern ``GLOB`` matches the request's model on any provider; ``NAME/GLOB`` matches
provider ``NAME`` with a model matching ``GLOB``, or a model literally named
``NAME/GLOB…`` on any provider (OpenRouter's model names contain a slash). Globs know
only ``*`` (any run of characters, slashes included) and ``?`` (one character), and are
case-sensitive: ``[`` and the rest are literal, unlike :mod:`fnmatch`, because model
names never need character classes and an admin typing one most likely means it literally.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence


@functools.lru_cache(maxsize=4096)
def _compiled(glob: str) -> re.Pattern[str]:
    """``glob`` as an anchored regex (cached: the same few patterns match every request)."""
    parts = []
    for char in glob:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def pattern_matches(pattern: str, provider_name: str, model: str) -> bool:
    """True when ``pattern`` allows ``model`` on the provider named ``provider_name``."""
    if _compiled(pattern).fullmatch(model):
        return True
    name, sep, glob = pattern.partition("/")
    return bool(sep) and name == provider_name and _compiled(glob).fullmatch(model) is not None


def model_allowed(patterns: Sequence[str] | None, provider_name: str, model: str) -> bool:
    """True when ``patterns`` (None: no restriction) allow ``model``; a request that names
    no model is never allowed while a restriction applies (it cannot be checked)."""
    if patterns is None:
        return True
    if not model:
        return False
    return any(pattern_matches(p, provider_name, model) for p in patterns)
