"""Keeps this process's :class:`~aibridge.governance.prices.PriceBook` in step with the
``model_prices`` table.

The same contract as the provider reload (:mod:`aibridge.reload`), through the same
:class:`~aibridge.store.watch.ConfigWatcher` on ``model_prices_changed`` and the ``prices``
config version: start-up fails if the first load fails, so a gateway never records costs
from an empty table by accident. A failed read keeps the previous table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.governance.prices import Price, PriceBook, PriceTable
from aibridge.store import config_version
from aibridge.store.prices import StoredPrice, list_prices
from aibridge.store.pubsub import PRICES_CHANGED, PubSub
from aibridge.store.watch import ConfigWatcher

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
        self.book = book
        self._lock = asyncio.Lock()
        self.config_version = -1
        """The ``prices`` config version of the installed table (-1 before the first load)."""
        self.reloads = 0
        """Successful loads so far."""
        self._watch = ConfigWatcher(
            sessions,
            pubsub,
            (PRICES_CHANGED,),
            what="price",
            version_name=config_version.PRICES,
            reload=self.reload,
            applied_version=lambda: self.config_version,
            interval=reconcile_interval,
        )

    async def start(self) -> None:
        """Subscribe, then load once (raising if that fails), then watch."""
        if not await self._watch.start():
            raise RuntimeError("initial price load failed; see the log")

    async def stop(self) -> None:
        """Unsubscribe and stop background work."""
        await self._watch.stop()

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
