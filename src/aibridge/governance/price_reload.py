"""Keeps this process's :class:`~aibridge.governance.prices.PriceBook` in step with the
``model_prices`` table.

The same contract as the provider reload (:mod:`aibridge.reload`): subscribe to
``model_prices_changed`` first, then load once (start-up fails if that load fails, so a
gateway never records costs from an empty table by accident), then reload on every hint
(and on a "messages may be lost" signal) and whenever the cheap ``prices`` config-version
poll sees a change no hint delivered. A failed read keeps the previous table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.governance.prices import Price, PriceBook, PriceTable
from aibridge.store import config_version
from aibridge.store.prices import StoredPrice, list_prices
from aibridge.store.pubsub import PRICES_CHANGED, PubSub, Unsubscribe

log = logging.getLogger(__name__)


def price_table(rows: Iterable[StoredPrice]) -> PriceTable:
    """The lookup table of stored prices."""
    return PriceTable(
        Price(
            provider_type=r.provider_type,
            model=r.model,
            input_micros=r.input_micros,
            output_micros=r.output_micros,
            cache_read_micros=r.cache_read_micros,
            cache_write_micros=r.cache_write_micros,
            effective_date=r.effective_date,
        )
        for r in rows
    )


class PriceReloader:
    """Loads prices into ``book`` at start and whenever they change."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pubsub: PubSub,
        book: PriceBook,
        *,
        reconcile_interval: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._pubsub = pubsub
        self.book = book
        self._interval = reconcile_interval
        self._lock = asyncio.Lock()
        self._pending = asyncio.Event()
        self._unsubscribe: Unsubscribe | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.config_version = -1
        """The ``prices`` config version of the installed table (-1 before the first load)."""
        self.reloads = 0
        """Successful loads so far."""

    async def start(self) -> None:
        """Subscribe, then load once (raising if that fails), then watch."""
        self._unsubscribe = await self._pubsub.subscribe(PRICES_CHANGED, self._notified)
        if not await self.reload():
            await self._unsubscribe_now()
            raise RuntimeError("initial price load failed; see the log")
        self._tasks = [
            asyncio.create_task(self._reload_loop(), name="price-reload"),
            asyncio.create_task(self._reconcile_loop(), name="price-reconcile"),
        ]

    async def stop(self) -> None:
        """Unsubscribe and stop background work."""
        await self._unsubscribe_now()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _unsubscribe_now(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            await unsubscribe()

    def _notified(self, _payload: bytes, error: Exception | None) -> None:
        if error is not None:
            log.warning("price notifications may have been lost; reloading")
        # Coalesced: a burst of writes while a reload runs causes one more reload.
        self._pending.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            await self.reload()

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with self._sessions() as session:
                    version = await config_version.read(session, config_version.PRICES)
            except Exception as exc:
                log.warning("price version check failed", extra={"error": str(exc)})
                continue
            if version != self.config_version:
                log.info("price version changed without a notification; reloading")
                self._pending.set()

    async def reload(self) -> bool:
        """Read every price in one transaction and install the table; False on failure
        (the previous table stays)."""
        async with self._lock:
            try:
                async with self._sessions() as session, session.begin():
                    version = await config_version.read(session, config_version.PRICES)
                    rows = await list_prices(session)
            except Exception as exc:
                log.error(
                    "price reload failed; keeping the previous prices",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
                return False
            self.book.replace(price_table(rows))
            self.config_version = version
            self.reloads += 1
            log.info("prices reloaded", extra={"prices": len(rows), "config_version": version})
            return True
