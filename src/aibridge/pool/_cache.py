"""The bridge cache: provider generations, cache entries and an LRU map with an absolute
per-entry expiry."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aibridge.pool._admission import AdmissionGate
from aibridge.pool._builder import BridgeKey
from aibridge.providers.snapshot import ProviderSnapshot

B = TypeVar("B")

CacheKey = tuple[int, BridgeKey]
"""(generation id, key): entries of different generations can never collide."""


@dataclass(eq=False)
class Generation(Generic[B]):
    """One provider snapshot and every live bridge built from it."""

    id: int
    snapshot: ProviderSnapshot
    retired: bool = False
    # Every live entry built for this generation (cached or not), so retiring the
    # generation reaches bridges the cache no longer knows about.
    entries: set[Entry[B]] = field(default_factory=set)


@dataclass(eq=False)
class Entry(Generic[B]):
    """A built bridge, where it belongs, and the gate admitting requests onto it (retired
    exactly when the pool retires the entry)."""

    ck: CacheKey
    key: BridgeKey
    generation: Generation[B]
    bridge: B
    gate: AdmissionGate = field(default_factory=AdmissionGate)
    uncached: bool = False


class BridgeCache(Generic[B]):
    """LRU map with an absolute per-entry expiry and the hit/miss/added/evicted counters.

    ``on_exit(entry, reason)`` is called exactly once for every entry the cache removes by
    itself (capacity eviction, expiry); :meth:`discard` removes without calling it because
    the caller is the one retiring the entry.
    """

    def __init__(
        self,
        max_items: int,
        ttl: float,
        on_exit: Callable[[Entry[B], str], None],
    ) -> None:
        self.max_items = max_items
        self.ttl = ttl
        self._on_exit = on_exit
        # LRU order: first = least recently used.
        self._items: OrderedDict[CacheKey, Entry[B]] = OrderedDict()
        # Insertion order. The TTL is the same for every entry and hits do not extend it,
        # so insertion order is also expiry order: expired entries are always a prefix.
        self._expiry: OrderedDict[CacheKey, float] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.keys_added = 0
        self.keys_evicted = 0
        self.keys_expired = 0

    @property
    def enabled(self) -> bool:
        """False when nothing can be cached (every build is then served uncached)."""
        return self.max_items > 0 and self.ttl > 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, ck: object) -> bool:
        return ck in self._items

    def get(self, ck: CacheKey, now: float) -> Entry[B] | None:
        """The live entry for ``ck`` (counting a hit or a miss)."""
        self.purge_expired(now)
        entry = self._items.get(ck)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(ck)
        return entry

    def put(self, entry: Entry[B], now: float) -> None:
        """Insert ``entry``, evicting expired then least-recently-used entries to make room."""
        self.purge_expired(now)
        old = self._items.pop(entry.ck, None)
        if old is not None:
            # Single flight makes this unreachable; keep exactly-once retirement anyway.
            self._expiry.pop(entry.ck, None)
            self._on_exit(old, "replaced")
        while len(self._items) >= self.max_items:
            victim_ck, victim = self._items.popitem(last=False)
            self._expiry.pop(victim_ck, None)
            self.keys_evicted += 1
            self._on_exit(victim, "evicted")
        self._items[entry.ck] = entry
        self._expiry[entry.ck] = now + self.ttl
        self.keys_added += 1

    def discard(self, entry: Entry[B]) -> None:
        """Remove ``entry`` if it is the one cached under its key (no exit hook)."""
        if self._items.get(entry.ck) is entry:
            del self._items[entry.ck]
            self._expiry.pop(entry.ck, None)

    def purge_expired(self, now: float) -> int:
        """Drop every entry whose TTL has run out (``now >= inserted + ttl``)."""
        purged = 0
        while self._expiry:
            ck, expires_at = next(iter(self._expiry.items()))
            if now < expires_at:
                break
            del self._expiry[ck]
            entry = self._items.pop(ck)
            self.keys_expired += 1
            purged += 1
            self._on_exit(entry, "expired")
        return purged
