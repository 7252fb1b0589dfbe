"""PostgreSQL LISTEN/NOTIFY backend for :mod:`aibridge.store.pubsub` (scale-out deployments).

Every replica opens one dedicated *listener* connection that LISTENs on each channel
with at least one local subscriber, and a separate, lazily opened *publisher*
connection for ``SELECT pg_notify(...)``. Keeping them apart means a slow or broken
publish never delays notification delivery, and the listener connection is never
borrowed for anything else.

PostgreSQL does not buffer notifications for a session that is gone: anything sent
while the listener was disconnected is lost. So after a reconnect (and re-LISTEN of
every channel) each subscriber receives ``MessagesMayBeLost`` as its callback error and
is expected to resynchronise from the database (the subscribe-then-reload contract).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Iterable
from typing import Any

import asyncpg

from aibridge.secrets_mask import mask_url
from aibridge.store.pubsub import Callback, MessagesMayBeLost, Unsubscribe

log = logging.getLogger(__name__)

# PostgreSQL rejects NOTIFY payloads of 8000 bytes or more; stay clearly below so the
# error is ours (a ValueError at the call site), not a server error after a round trip.
MAX_PAYLOAD_BYTES = 7900

# Lower-case identifiers only: they need no case folding, and together with asyncpg's
# identifier quoting they rule out injection through LISTEN/UNLISTEN.
_CHANNEL_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
# Identifiers longer than NAMEDATALEN-1 are silently truncated by PostgreSQL, which
# would make two distinct long channel names collide.
_MAX_CHANNEL_LEN = 63

LISTENER_APPLICATION_NAME = "aibridge-listener"
PUBLISHER_APPLICATION_NAME = "aibridge-publisher"


def _connection_unusable(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is broken, as opposed to a statement error."""
    if isinstance(exc, asyncpg.PostgresError):
        # The server answered: only connection-class (08) and operator-intervention
        # (57: admin/crash shutdown, cannot connect now) errors mean the session is gone.
        return isinstance(
            exc,
            asyncpg.exceptions.PostgresConnectionError
            | asyncpg.exceptions.OperatorInterventionError,
        )
    # Socket errors and timeouts (OSError), ConnectionDoesNotExistError and other
    # InterfaceErrors, and InternalClientError, which asyncpg raises when a query
    # races with an unsolicited FATAL (pg_terminate_backend) it has not finished
    # processing: in all of them the connection must not be used again.
    return isinstance(exc, Exception)


def validate_channel(channel: str) -> None:
    """Raise ``ValueError`` unless ``channel`` is a safe lower-case identifier."""
    if not isinstance(channel, str) or not _CHANNEL_RE.fullmatch(channel):
        raise ValueError(f"invalid pubsub channel name {channel!r}: must match ^[a-z_][a-z0-9_]*$")
    if len(channel) > _MAX_CHANNEL_LEN:
        raise ValueError(f"pubsub channel name longer than {_MAX_CHANNEL_LEN} characters")


def _asyncpg_dsn(dsn: str) -> str:
    # Accept the SQLAlchemy spelling too; asyncpg only understands plain postgresql://.
    return dsn.replace("postgresql+asyncpg://", "postgresql://", 1)


class _Subscription:
    """One ``subscribe`` call; identity-based so the same callback may subscribe twice."""

    __slots__ = ("active", "callback", "channel")

    def __init__(self, channel: str, callback: Callback) -> None:
        self.channel = channel
        self.callback = callback
        self.active = True


class PostgresPubSub:
    """:class:`~aibridge.store.pubsub.PubSub` over PostgreSQL LISTEN/NOTIFY (asyncpg).

    Call :meth:`start` before :meth:`subscribe`; :meth:`publish` works without it (it
    uses its own connection). Callbacks run as separate tasks, so a slow subscriber
    never blocks the listener or other subscribers, and an exception in one is logged.

    If the listener connection drops it is re-established in the background with
    capped exponential backoff; every channel is LISTENed again and every subscriber
    then receives ``(b"", MessagesMayBeLost(...))``. A ``subscribe`` while the listener
    is down registers the callback and returns; the callback is covered by that same
    ``MessagesMayBeLost`` delivery once the listener is back.
    """

    def __init__(
        self,
        dsn: str,
        *,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        connect_timeout: float = 5.0,
        health_check_interval: float = 15.0,
    ) -> None:
        """``dsn`` is a ``postgresql://`` URL. Backoff starts at ``reconnect_initial``
        seconds and doubles up to ``reconnect_max``. ``connect_timeout`` bounds every
        connect, publish and health-check ping. ``health_check_interval`` is how often
        the idle listener is pinged, which catches half-open TCP connections (peer gone
        without FIN/RST) that never signal termination."""
        if reconnect_initial <= 0 or reconnect_max < reconnect_initial:
            raise ValueError("need 0 < reconnect_initial <= reconnect_max")
        if connect_timeout <= 0 or health_check_interval <= 0:
            raise ValueError("connect_timeout and health_check_interval must be positive")
        self._dsn = _asyncpg_dsn(dsn)
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._connect_timeout = connect_timeout
        self._health_check_interval = health_check_interval

        self._subs: dict[str, list[_Subscription]] = {}
        self._listener: asyncpg.Connection | None = None
        # Serialises everything done on the listener connection (asyncpg allows one
        # operation at a time) and every change to which channels are LISTENed, so a
        # concurrent first/last subscriber and a reconnect cannot interleave.
        self._listener_lock = asyncio.Lock()
        self._publisher: asyncpg.Connection | None = None
        self._publisher_lock = asyncio.Lock()

        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._reconnects = 0

    # ----------------------------------------------------------------- health API

    @property
    def connected(self) -> bool:
        """Whether the listener connection is currently up (notifications flow)."""
        conn = self._listener
        return conn is not None and not conn.is_closed()

    @property
    def reconnects(self) -> int:
        """How many times the listener has been re-established after a loss."""
        return self._reconnects

    @property
    def listener_pid(self) -> int | None:
        """Server backend PID of the listener connection, or None while disconnected."""
        conn = self._listener
        return conn.get_server_pid() if conn is not None and not conn.is_closed() else None

    @property
    def publisher_pid(self) -> int | None:
        """Server backend PID of the publisher connection, or None if not open."""
        conn = self._publisher
        return conn.get_server_pid() if conn is not None and not conn.is_closed() else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the listener connection and start the reconnect supervisor.

        Raises ``ConnectionError`` (password masked) if PostgreSQL is unreachable, so a
        replica fails startup instead of serving a snapshot that can never refresh.
        """
        if self._closed:
            raise RuntimeError("pubsub is closed")
        if self._started:
            return
        try:
            conn = await self._connect(LISTENER_APPLICATION_NAME)
        except Exception as exc:
            raise ConnectionError(
                f"pubsub: cannot connect to PostgreSQL at {mask_url(self._dsn)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._attach(conn)
        self._started = True
        self._supervisor = asyncio.create_task(self._supervise(), name="aibridge-pubsub-supervisor")

    async def close(self) -> None:
        """Stop reconnecting, close both connections and drop all subscribers.

        Idempotent. Deliveries already running get ``connect_timeout`` seconds to
        finish, then are cancelled so a hung callback cannot block shutdown.
        """
        if self._closed:
            return
        self._closed = True
        for sub_list in self._subs.values():
            for sub in sub_list:
                sub.active = False
        self._subs.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        listener, self._listener = self._listener, None
        publisher, self._publisher = self._publisher, None
        await asyncio.gather(
            *(self._close_conn(c) for c in (listener, publisher) if c is not None),
        )
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._connect_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------- publish

    async def publish(self, channel: str, payload: bytes = b"") -> None:
        """NOTIFY ``channel`` on every replica (including this one).

        ``payload`` must be UTF-8 text without NUL bytes and at most
        ``MAX_PAYLOAD_BYTES`` long (``ValueError`` otherwise). Call only after the
        transaction carrying the change committed: NOTIFY here runs in autocommit on
        its own connection, so it is sent immediately.
        """
        validate_channel(channel)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"pubsub payload is {len(payload)} bytes; max {MAX_PAYLOAD_BYTES}")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("pubsub payload must be UTF-8 text") from exc
        if "\x00" in text:
            raise ValueError("pubsub payload must not contain NUL bytes")
        if self._closed:
            raise RuntimeError("pubsub is closed")
        async with self._publisher_lock:
            # One retry on a fresh connection: the cached connection may have been
            # killed (idle timeout, failover, pg_terminate_backend) without asyncpg
            # noticing yet. A duplicate notification is harmless, it is only a hint.
            for attempt in (1, 2):
                conn = await self._publisher_conn()
                try:
                    # Bounded: a half-open TCP connection would otherwise hang the
                    # publishing request for the kernel's retransmission timeout.
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", channel, text, timeout=self._connect_timeout
                    )
                    return
                except Exception as exc:
                    if not _connection_unusable(exc):
                        raise
                    self._publisher = None
                    conn.terminate()  # a graceful close would only wait on a dead socket
                    if attempt == 2 or self._closed:
                        raise
                    log.info("pubsub publisher connection lost; reconnecting")

    async def _publisher_conn(self) -> asyncpg.Connection:
        conn = self._publisher
        if conn is None or conn.is_closed():
            self._publisher = None
            conn = await self._connect(PUBLISHER_APPLICATION_NAME)
            if self._closed:
                # close() ran while we were connecting: do not leak the connection.
                await self._close_conn(conn)
                raise RuntimeError("pubsub is closed")
            self._publisher = conn
        return conn

    # ----------------------------------------------------------------- subscribe

    async def subscribe(self, channel: str, callback: Callback) -> Unsubscribe:
        """Register ``callback`` for ``channel``; returns an idempotent unsubscribe.

        When the listener is connected, LISTEN has completed on the server before this
        returns, so a notification published afterwards (from any replica) is
        delivered. Safe to call concurrently.
        """
        validate_channel(channel)
        if self._closed:
            raise RuntimeError("pubsub is closed")
        if not self._started:
            raise RuntimeError("PostgresPubSub.start() must be called before subscribe()")
        sub = _Subscription(channel, callback)
        async with self._listener_lock:
            if self._closed:
                raise RuntimeError("pubsub is closed")
            subs = self._subs.setdefault(channel, [])
            first = not subs
            subs.append(sub)
            conn = self._listener
            if first and conn is not None and not conn.is_closed():
                try:
                    await conn.add_listener(channel, self._on_notification)
                except Exception as exc:
                    if self._closed:
                        self._remove(sub)
                        raise RuntimeError("pubsub is closed") from exc
                    if not _connection_unusable(exc):
                        self._remove(sub)
                        raise
                    # Keep the subscription: the reconnect re-LISTENs every channel in
                    # self._subs and then tells this subscriber to resynchronise.
                    log.warning("pubsub LISTEN failed; will retry after reconnect", exc_info=True)
                    self._mark_lost(conn)
                except BaseException:
                    # Cancellation: leave no half state behind.
                    self._remove(sub)
                    raise

        async def unsubscribe() -> None:
            await self._unsubscribe(sub)

        return unsubscribe

    async def _unsubscribe(self, sub: _Subscription) -> None:
        if not sub.active:
            return
        sub.active = False
        if self._closed:
            return
        async with self._listener_lock:
            if not self._remove(sub):
                return
            conn = self._listener
            if conn is None or conn.is_closed():
                return  # the reconnect only LISTENs channels still in self._subs
            try:
                await conn.remove_listener(sub.channel, self._on_notification)
            except Exception as exc:
                if _connection_unusable(exc):
                    # The connection is gone; the new one will simply not LISTEN here.
                    self._mark_lost(conn)
                else:
                    # A stray LISTEN only costs ignored notifications; don't fail callers.
                    log.warning("pubsub UNLISTEN failed", exc_info=True)

    def _remove(self, sub: _Subscription) -> bool:
        """Drop ``sub``; return True if it was the channel's last subscriber."""
        subs = self._subs.get(sub.channel)
        if subs is None or sub not in subs:
            return False
        subs.remove(sub)
        if subs:
            return False
        del self._subs[sub.channel]
        return True

    # ------------------------------------------------------------------ delivery

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        # Called by asyncpg via loop.call_soon: must not block, so fan out as tasks.
        # Not filtered by connection: a replaced listener is terminated (asyncpg then
        # drops its listeners), and one being adopted is already LISTENing for us.
        if self._closed:
            return
        data = payload.encode("utf-8")
        self._deliver(self._subs.get(channel, ()), data, None)

    def _deliver(
        self, subs: Iterable[_Subscription], payload: bytes, error: Exception | None
    ) -> None:
        for sub in list(subs):
            task = asyncio.create_task(self._invoke(sub, payload, error))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _invoke(sub: _Subscription, payload: bytes, error: Exception | None) -> None:
        # Re-checked here, not only at fan-out: unsubscribe() may have run in between.
        if not sub.active:
            return
        try:
            result = sub.callback(payload, error)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("pubsub subscriber failed", extra={"channel": sub.channel})

    # ----------------------------------------------------------------- reconnect

    def _attach(self, conn: asyncpg.Connection) -> None:
        self._listener = conn
        conn.add_termination_listener(self._on_listener_terminated)

    def _on_listener_terminated(self, conn: Any) -> None:
        # asyncpg calls this for every close, including our own in close().
        self._mark_lost(conn)

    def _mark_lost(self, conn: asyncpg.Connection) -> None:
        # Only the current listener matters; late signals from replaced ones are noise.
        current = self._listener
        if self._closed or current is None or conn is not current:
            return
        log.warning("pubsub listener connection lost; reconnecting")
        self._listener = None
        if not current.is_closed():
            current.terminate()  # e.g. failed health check: don't leave a zombie socket
        self._lost.set()

    async def _supervise(self) -> None:
        while not self._closed:
            try:
                try:
                    async with asyncio.timeout(self._health_check_interval):
                        await self._lost.wait()
                except TimeoutError:
                    await self._health_check()
                    continue
                self._lost.clear()
                await self._reconnect()
            except Exception:
                # Never let a bug end supervision: without it the replica would stop
                # hearing about changes for good. Back off and try again.
                log.exception("pubsub supervisor error")
                if self._listener is None:
                    self._lost.set()
                await asyncio.sleep(self._reconnect_max)

    async def _health_check(self) -> None:
        """Ping the idle listener: a half-open TCP connection never reports termination."""
        async with self._listener_lock:
            conn = self._listener
            if conn is None:
                return
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await conn.fetchval("SELECT 1")
            except Exception:
                log.warning("pubsub listener health check failed", exc_info=True)
                self._mark_lost(conn)

    async def _reconnect(self) -> None:
        delay = self._reconnect_initial
        while not self._closed:
            try:
                conn = await self._connect(LISTENER_APPLICATION_NAME)
            except Exception as exc:
                log.warning(
                    "pubsub listener reconnect failed",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in": delay},
                )
            else:
                if await self._adopt(conn):
                    return
            # Jitter keeps N replicas from reconnecting in lockstep after a DB restart.
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
            delay = min(delay * 2, self._reconnect_max)

    async def _adopt(self, conn: asyncpg.Connection) -> bool:
        """LISTEN every channel on the new ``conn``, make it current, announce the gap.

        Returns False if the caller should back off and retry. ``conn`` is terminated
        unless adopted, also when cancelled by ``close()``, so it cannot leak.
        """
        adopted = False
        try:
            async with self._listener_lock:
                if self._closed:
                    return True
                try:
                    # Under the lock so subscribe/unsubscribe cannot change the channel
                    # set between this re-LISTEN and the swap.
                    for channel in list(self._subs):
                        await conn.add_listener(channel, self._on_notification)
                except Exception:
                    log.warning("pubsub re-LISTEN after reconnect failed", exc_info=True)
                    return False
                if conn.is_closed():
                    return False
                self._attach(conn)
                adopted = True
                self._reconnects += 1
                subs = [s for channel_subs in self._subs.values() for s in channel_subs]
        finally:
            if not adopted:
                conn.terminate()
        log.info("pubsub listener reconnected", extra={"channels": len(self._subs)})
        self._deliver(
            subs,
            b"",
            MessagesMayBeLost("pubsub listener reconnected; notifications may have been missed"),
        )
        return True

    # ------------------------------------------------------------------- helpers

    async def _connect(self, application_name: str) -> asyncpg.Connection:
        # application_name makes each role visible in pg_stat_activity for operators.
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": application_name},
        )
        return conn

    async def _close_conn(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=self._connect_timeout)
        except Exception:
            # A graceful close needs a working socket; aborting always succeeds.
            conn.terminate()
