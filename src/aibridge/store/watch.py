"""Keeping an in-memory copy of some configuration in step with the database.

What the provider reload and the price reload share: subscribe to the change channels
first, then load once (a failed first load fails start-up, with nothing left subscribed),
then reload on every hint, coalesced (a burst of writes while a reload runs causes one more
reload), on a "messages may have been lost" signal, and whenever a periodic poll of a
config version sees a change no hint delivered. What a load reads and installs is the
owner's ``reload`` callable; a failed one keeps the previous copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.store import config_version
from aibridge.store.pubsub import PubSub, Unsubscribe

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Runs ``reload`` at start, on notifications on ``channels`` and when the config
    version ``version_name`` moves away from ``applied_version()``.

    ``on_tick`` runs after every poll (the provider reload's replica heartbeat); it must
    not raise. ``what`` names the configuration in log lines ("provider", "price").
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pubsub: PubSub,
        channels: Sequence[str],
        *,
        what: str,
        version_name: str,
        reload: Callable[[], Awaitable[bool]],
        applied_version: Callable[[], int],
        interval: float,
        on_tick: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._sessions = sessions
        self._pubsub = pubsub
        self._channels = tuple(channels)
        self._what = what
        self._version_name = version_name
        self._reload = reload
        self._applied_version = applied_version
        self.interval = interval
        self._on_tick = on_tick
        self._pending = asyncio.Event()
        self._unsubscribe: list[Unsubscribe] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> bool:
        """Subscribe, then load once; False (with nothing left subscribed or running) when
        that first load failed, else True with the watch running."""
        try:
            for channel in self._channels:
                self._unsubscribe.append(await self._pubsub.subscribe(channel, self._notified))
        except BaseException:
            await self._unsubscribe_all()
            raise
        if not await self._reload():
            await self._unsubscribe_all()
            return False
        self._tasks = [
            asyncio.create_task(self._reload_loop(), name=f"{self._what}-reload"),
            asyncio.create_task(self._poll_loop(), name=f"{self._what}-reconcile"),
        ]
        return True

    async def stop(self) -> None:
        """Unsubscribe and stop the background tasks."""
        await self._unsubscribe_all()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _unsubscribe_all(self) -> None:
        unsubscribes, self._unsubscribe = self._unsubscribe, []
        for unsubscribe in unsubscribes:
            await unsubscribe()

    def _notified(self, _payload: bytes, error: Exception | None) -> None:
        if error is not None:
            log.warning(
                f"{self._what} notifications may have been lost; reloading",
                extra={"error": str(error)},
            )
        # Coalesced: many notifications while a reload runs cause one more reload.
        self._pending.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            await self._reload()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                async with self._sessions() as session:
                    version = await config_version.read(session, self._version_name)
            except Exception as exc:
                log.warning(f"{self._what} version check failed", extra={"error": str(exc)})
                continue
            if version != self._applied_version():
                log.info(f"{self._what} version changed without a notification; reloading")
                self._pending.set()
            if self._on_tick is not None:
                await self._on_tick()
