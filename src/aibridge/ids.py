"""Random (version 4) and time-ordered (version 7) UUIDs, cheaper than :func:`uuid.uuid4`.

``uuid.uuid4()`` makes one ``getrandom`` system call and runs ``UUID.__init__`` (argument
checks, bit twiddling in Python) for every id; a bridged request needs three or four ids.
Here the random bytes come from :func:`os.urandom` 256 ids at a time (the same kernel
CSPRNG, so the ids are exactly as unpredictable), and the UUID object is built directly
from the integer with the version and variant bits set as ``UUID(version=4)`` sets them.

:func:`new_uuid7` makes time-ordered ids (RFC 9562 version 7: Unix milliseconds first,
then 74 random bits from the same pool) for every record, the interception's own id
included: a random key lands on a random page of its index, so every insert into a big
table dirties (and writes to the WAL at commit) a page of its own, while time-ordered
keys append to the last pages (``bench/sinkbench.py``: the SQLite writer's CPU per
request halves). Coder's gateway gives interceptions a version-4 id; nothing reads the
version, the 74 random bits keep ids unguessable, and the millisecond the id shows is
when the client itself sent the request (docs/benchmarks.md "Round 12").
"""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["new_uuid4", "new_uuid7"]

_BATCH = 256
_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_SET = (0x8000 << 48) | (4 << 76)  # RFC 4122 variant, version 4
# From a pooled version-4 value: clear the 48 time bits and the version (keep the variant).
_CLEAR7 = ~((((1 << 48) - 1) << 80) | (0xF << 76))
_SET7 = 7 << 76

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


def _random_bits() -> int:
    """128 bits from the pool (refilled in bulk when empty), already a version-4 UUID's."""
    while True:
        try:
            return _pool.pop()
        except IndexError:
            _refill()


def _uuid(value: int) -> uuid.UUID:
    # Built without ``UUID.__init__``'s argument checks: ``value`` is always 128 bits.
    u: uuid.UUID = _new(uuid.UUID)
    _setattr(u, "int", value)
    _setattr(u, "is_safe", _UNKNOWN)
    return u


def new_uuid4() -> uuid.UUID:
    """A random UUID, equal in kind to ``uuid.uuid4()``."""
    return _uuid(_random_bits())


def new_uuid7() -> uuid.UUID:
    """A time-ordered UUID (version 7): the wall clock's Unix milliseconds, then 74
    random bits. Ids made in different milliseconds sort by time (as long as the clock
    does not step back; they stay unique if it does); within one millisecond their order
    is random. The creation time can be read from the id."""
    value = _random_bits()
    return _uuid((value & _CLEAR7) | _SET7 | (time.time_ns() // 1_000_000) << 80)
