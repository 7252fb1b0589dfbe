"""Random (version 4) UUIDs for record ids, cheaper than :func:`uuid.uuid4`.

``uuid.uuid4()`` makes one ``getrandom`` system call and runs ``UUID.__init__`` (argument
checks, bit twiddling in Python) for every id; a bridged request needs three or four ids.
Here the random bytes come from :func:`os.urandom` 256 ids at a time (the same kernel
CSPRNG, so the ids are exactly as unpredictable), and the UUID object is built directly
from the integer with the version and variant bits set as ``UUID(version=4)`` sets them.
"""

from __future__ import annotations

import os
import uuid

__all__ = ["new_uuid4"]

_BATCH = 256
_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_SET = (0x8000 << 48) | (4 << 76)  # RFC 4122 variant, version 4

# Pre-made ids, popped from the end. ``list.pop`` and ``list.extend`` are atomic under
# the GIL, so threads never get the same id; a refill race just makes two batches.
_pool: list[int] = []


def _refill() -> None:
    raw = os.urandom(16 * _BATCH)
    from_bytes = int.from_bytes
    _pool.extend([(from_bytes(raw[i : i + 16]) & _CLEAR) | _SET for i in range(0, len(raw), 16)])


def _forget() -> None:
    # A forked child must never hand out the ids its parent may also use.
    _pool.clear()


os.register_at_fork(after_in_child=_forget)

_new = object.__new__
_setattr = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def new_uuid4() -> uuid.UUID:
    """A random UUID, equal in kind to ``uuid.uuid4()``."""
    while True:
        try:
            value = _pool.pop()
            break
        except IndexError:
            _refill()
    u: uuid.UUID = _new(uuid.UUID)
    _setattr(u, "int", value)
    _setattr(u, "is_safe", _UNKNOWN)
    return u
