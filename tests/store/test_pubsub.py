"""Pub/sub backends: in-process, and PostgreSQL LISTEN/NOTIFY across "replicas".

Every wait is on an event or queue inside ``asyncio.timeout`` (no sleep-based waiting).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from urllib.parse import urlsplit

import asyncpg
import pytest

from aibridge.store.pubsub import (
    PROVIDERS_CHANGED,
    InProcessPubSub,
    MessagesMayBeLost,
    publish_quietly,
)
from aibridge.store.pubsub_pg import (
    LISTENER_APPLICATION_NAME,
    MAX_PAYLOAD_BYTES,
    PUBLISHER_APPLICATION_NAME,
    PostgresPubSub,
)
from aibridge.testing.databases import postgres_admin_url

WAIT = 10.0  # generous upper bound; tests finish as soon as the event arrives

Delivery = tuple[bytes, Exception | None]


class Recorder:
    """A subscriber callback that queues every ``(payload, error)`` it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.received: list[Delivery] = []

    async def __call__(self, payload: bytes, error: Exception | None) -> None:
        self.received.append((payload, error))
        await self.queue.put((payload, error))

    async def next(self) -> Delivery:
        async with asyncio.timeout(WAIT):
            return await self.queue.get()


# --------------------------------------------------------------------- in-process


async def test_inprocess_delivers_to_every_subscriber() -> None:
    ps = InProcessPubSub()
    a, b = Recorder(), Recorder()
    sync_seen: list[bytes] = []
    sync_done = asyncio.Event()

    def sync_cb(payload: bytes, error: Exception | None) -> None:
        sync_seen.append(payload)
        sync_done.set()

    await ps.subscribe("chan", a)
    await ps.subscribe("chan", b)
    await ps.subscribe("chan", sync_cb)
    await ps.publish("chan", b"hello")
    assert await a.next() == (b"hello", None)
    assert await b.next() == (b"hello", None)
    async with asyncio.timeout(WAIT):
        await sync_done.wait()
    assert sync_seen == [b"hello"]
    await ps.close()


async def test_inprocess_unsubscribe_stops_delivery() -> None:
    ps = InProcessPubSub()
    gone, stays = Recorder(), Recorder()
    unsubscribe = await ps.subscribe("chan", gone)
    await ps.subscribe("chan", stays)
    await unsubscribe()
    await unsubscribe()  # idempotent
    await ps.publish("chan", b"x")
    assert await stays.next() == (b"x", None)
    await ps.close()  # waits for every delivery in flight, so nothing can arrive later
    assert gone.received == []


async def test_inprocess_raising_callback_does_not_break_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ps = InProcessPubSub()
    ok = Recorder()

    async def boom(payload: bytes, error: Exception | None) -> None:
        raise RuntimeError("subscriber bug")

    await ps.subscribe("chan", boom)
    await ps.subscribe("chan", ok)
    with caplog.at_level(logging.ERROR, logger="aibridge.store.pubsub"):
        await ps.publish("chan", b"1")
        await ps.publish("chan", b"2")
        assert await ok.next() == (b"1", None)
        assert await ok.next() == (b"2", None)
        await ps.close()
    failures = [r for r in caplog.records if r.getMessage() == "pubsub subscriber failed"]
    assert len(failures) == 2


async def test_publish_quietly_reports_and_logs_failure(caplog: pytest.LogCaptureFixture) -> None:
    ps = InProcessPubSub()
    rec = Recorder()
    await ps.subscribe(PROVIDERS_CHANGED, rec)
    assert await publish_quietly(ps, PROVIDERS_CHANGED) is True
    assert await rec.next() == (b"", None)
    await ps.close()
    with caplog.at_level(logging.WARNING, logger="aibridge.store.pubsub"):
        assert await publish_quietly(ps, PROVIDERS_CHANGED) is False
    warnings = [r for r in caplog.records if "could not publish" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].exc_info is not None


# ---------------------------------------------------------------------- PostgreSQL

PubSubFactory = Callable[[], Awaitable[PostgresPubSub]]


@pytest.fixture
async def make_pg_pubsub(pg_url: str) -> AsyncIterator[PubSubFactory]:
    """Start PostgresPubSub instances (each one is a "replica") on a fresh database."""
    async with AsyncExitStack() as stack:

        async def make() -> PostgresPubSub:
            ps = PostgresPubSub(pg_url, reconnect_initial=0.02, reconnect_max=0.2)
            await ps.start()
            stack.push_async_callback(ps.close)
            return ps

        yield make


async def _terminate_backend(pid: int | None) -> None:
    assert pid is not None
    admin = postgres_admin_url()
    assert admin is not None
    conn = await asyncpg.connect(admin)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    finally:
        await conn.close()


async def test_pg_subscriber_reads_row_committed_before_publish(
    pg_url: str, make_pg_pubsub: PubSubFactory
) -> None:
    ps = await make_pg_pubsub()
    setup = await asyncpg.connect(pg_url)
    try:
        await setup.execute("CREATE TABLE providers (name text PRIMARY KEY)")
    finally:
        await setup.close()

    seen: asyncio.Queue[list[str]] = asyncio.Queue()

    async def reload(payload: bytes, error: Exception | None) -> None:
        # What a real subscriber does: re-read the authoritative state.
        conn = await asyncpg.connect(pg_url)
        try:
            rows = await conn.fetch("SELECT name FROM providers ORDER BY name")
        finally:
            await conn.close()
        await seen.put([r["name"] for r in rows])

    await ps.subscribe(PROVIDERS_CHANGED, reload)
    writer = await asyncpg.connect(pg_url)
    try:
        async with writer.transaction():
            await writer.execute("INSERT INTO providers VALUES ('openai')")
    finally:
        await writer.close()
    await ps.publish(PROVIDERS_CHANGED)
    async with asyncio.timeout(WAIT):
        assert await seen.get() == ["openai"]


async def test_pg_two_replicas_see_each_others_notifications(
    make_pg_pubsub: PubSubFactory,
) -> None:
    a, b = await make_pg_pubsub(), await make_pg_pubsub()
    rec_a, rec_b = Recorder(), Recorder()
    await a.subscribe(PROVIDERS_CHANGED, rec_a)
    await b.subscribe(PROVIDERS_CHANGED, rec_b)

    await a.publish(PROVIDERS_CHANGED, b"from-a")
    assert await rec_b.next() == (b"from-a", None)
    assert await rec_a.next() == (b"from-a", None)  # the publishing replica too

    await b.publish(PROVIDERS_CHANGED, "from-b é".encode())
    assert await rec_a.next() == ("from-b é".encode(), None)
    assert await rec_b.next() == ("from-b é".encode(), None)


async def test_pg_concurrent_first_subscribers_all_listen(make_pg_pubsub: PubSubFactory) -> None:
    ps = await make_pg_pubsub()
    recs = [Recorder() for _ in range(10)]
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(ps.subscribe("concurrent", r) for r in recs))
    await ps.publish("concurrent", b"all")
    for rec in recs:
        assert await rec.next() == (b"all", None)


async def test_pg_unsubscribe_stops_delivery_and_unlistens(make_pg_pubsub: PubSubFactory) -> None:
    ps = await make_pg_pubsub()
    gone, stays, marker = Recorder(), Recorder(), Recorder()
    unsub_gone = await ps.subscribe("chan_a", gone)
    unsub_stays = await ps.subscribe("chan_a", stays)
    await ps.subscribe("chan_b", marker)

    await unsub_gone()
    await unsub_gone()  # idempotent
    await ps.publish("chan_a", b"1")
    assert await stays.next() == (b"1", None)

    await unsub_stays()
    listener = ps._listener  # white-box: ask the listener session what it LISTENs to
    assert listener is not None
    async with ps._listener_lock:
        channels = {r[0] for r in await listener.fetch("SELECT pg_listening_channels()")}
    assert channels == {"chan_b"}

    # Notifications from one session arrive in order: once chan_b's is delivered,
    # a chan_a delivery would already have been dispatched.
    await ps.publish("chan_a", b"2")
    await ps.publish("chan_b", b"marker")
    assert await marker.next() == (b"marker", None)
    await ps.close()  # drains deliveries in flight
    assert gone.received == []
    assert stays.received == [(b"1", None)]


async def test_pg_failing_or_slow_callback_does_not_block_others(
    make_pg_pubsub: PubSubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ps = await make_pg_pubsub()
    release = asyncio.Event()
    slow_started = asyncio.Event()
    ok = Recorder()

    async def slow(payload: bytes, error: Exception | None) -> None:
        slow_started.set()
        await release.wait()

    def boom(payload: bytes, error: Exception | None) -> None:
        raise RuntimeError("subscriber bug")

    await ps.subscribe("chan", slow)
    await ps.subscribe("chan", boom)
    await ps.subscribe("chan", ok)
    with caplog.at_level(logging.ERROR, logger="aibridge.store.pubsub_pg"):
        await ps.publish("chan", b"1")
        await ps.publish("chan", b"2")
        assert await ok.next() == (b"1", None)
        assert await ok.next() == (b"2", None)
    async with asyncio.timeout(WAIT):
        await slow_started.wait()
    assert not release.is_set()  # the slow callback is still blocked, yet delivery went on
    release.set()
    failures = [r for r in caplog.records if r.getMessage() == "pubsub subscriber failed"]
    assert len(failures) == 2


async def test_pg_listener_loss_reconnects_and_reports_messages_may_be_lost(
    pg_url: str, make_pg_pubsub: PubSubFactory
) -> None:
    ps = await make_pg_pubsub()
    other_replica = await make_pg_pubsub()
    first, second, other_channel = Recorder(), Recorder(), Recorder()
    await ps.subscribe(PROVIDERS_CHANGED, first)
    await ps.subscribe(PROVIDERS_CHANGED, second)
    await ps.subscribe("api_keys_changed", other_channel)
    old_pid = ps.listener_pid
    assert ps.connected and ps.reconnects == 0

    admin = await asyncpg.connect(pg_url)
    try:
        app = await admin.fetchval(
            "SELECT application_name FROM pg_stat_activity WHERE pid = $1", old_pid
        )
    finally:
        await admin.close()
    assert app == LISTENER_APPLICATION_NAME

    await _terminate_backend(old_pid)
    # Every subscriber of every channel is told to resynchronise.
    for rec in (first, second, other_channel):
        payload, error = await rec.next()
        assert payload == b""
        assert isinstance(error, MessagesMayBeLost)
    assert ps.connected
    assert ps.reconnects == 1
    assert ps.listener_pid not in (None, old_pid)

    # Channels were LISTENed again: a publish from another replica still arrives.
    await other_replica.publish(PROVIDERS_CHANGED, b"after")
    assert await first.next() == (b"after", None)
    assert await second.next() == (b"after", None)
    await other_replica.publish("api_keys_changed", b"keys")
    assert await other_channel.next() == (b"keys", None)


class _CountingHandler(logging.Handler):
    """Sets ``reached`` once ``message`` has been logged ``count`` times."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__()
        self.message, self.count, self.seen = message, count, 0
        self.reached = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.seen += 1
            if self.seen >= self.count:
                self.reached.set()


async def test_pg_reconnect_backs_off_until_database_accepts_connections(
    pg_url: str, make_pg_pubsub: PubSubFactory
) -> None:
    ps = await make_pg_pubsub()
    rec = Recorder()
    await ps.subscribe(PROVIDERS_CHANGED, rec)
    db_name = pg_url.rpartition("/")[2]
    admin_url = postgres_admin_url()
    assert admin_url is not None
    failures = _CountingHandler("pubsub listener reconnect failed", count=3)
    pg_log = logging.getLogger("aibridge.store.pubsub_pg")
    pg_log.addHandler(failures)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{db_name}" WITH ALLOW_CONNECTIONS false')
        try:
            await _terminate_backend(ps.listener_pid)
            async with asyncio.timeout(WAIT):
                await failures.reached.wait()  # several attempts, each refused
            assert not ps.connected
            assert ps.listener_pid is None
            assert ps.reconnects == 0
            assert rec.received == []
        finally:
            await admin.execute(f'ALTER DATABASE "{db_name}" WITH ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
        pg_log.removeHandler(failures)

    payload, error = await rec.next()
    assert (payload, type(error)) == (b"", MessagesMayBeLost)
    assert ps.connected and ps.reconnects == 1
    await ps.publish(PROVIDERS_CHANGED, b"back")
    assert await rec.next() == (b"back", None)


async def test_pg_publish_survives_loss_of_its_connection(
    pg_url: str, make_pg_pubsub: PubSubFactory
) -> None:
    ps = await make_pg_pubsub()
    rec = Recorder()
    await ps.subscribe("chan", rec)
    await ps.publish("chan", b"1")
    assert await rec.next() == (b"1", None)
    pub_pid = ps.publisher_pid
    assert pub_pid is not None and pub_pid != ps.listener_pid

    await _terminate_backend(pub_pid)
    await ps.publish("chan", b"2")
    assert await rec.next() == (b"2", None)
    assert ps.publisher_pid not in (None, pub_pid)
    admin = await asyncpg.connect(pg_url)
    try:
        app = await admin.fetchval(
            "SELECT application_name FROM pg_stat_activity WHERE pid = $1", ps.publisher_pid
        )
    finally:
        await admin.close()
    assert app == PUBLISHER_APPLICATION_NAME
    assert ps.reconnects == 0  # the listener was never affected


class _ProxiedConnection:
    def __init__(self) -> None:
        self.dropping = False  # discard traffic both ways (a half-open connection)
        self.replies_flowing = asyncio.Event()  # cleared = hold server replies back
        self.replies_flowing.set()
        self.client_sent = bytearray()  # everything the client sent, for assertions
        self.client_sent_changed = asyncio.Event()


class FaultProxy:
    """TCP proxy to PostgreSQL that can misbehave on one proxied connection.

    ``blackhole`` simulates a half-open connection (peer gone, no FIN/RST), which asyncpg
    cannot notice by itself: only timeouts and health checks can. ``hold_replies``
    delays the server's answers, to observe what a client does while waiting.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.conns: list[_ProxiedConnection] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def blackhole(self, index: int) -> None:
        """From now on, drop everything proxied connection ``index`` carries."""
        self.conns[index].dropping = True

    async def wait_client_sent(self, index: int, needle: bytes) -> None:
        """Wait until the client of connection ``index`` has sent ``needle``."""
        conn = self.conns[index]
        async with asyncio.timeout(WAIT):
            while needle not in conn.client_sent:
                conn.client_sent_changed.clear()
                await conn.client_sent_changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        conn = _ProxiedConnection()
        self.conns.append(conn)
        self._writers += [writer, up_writer]
        for coro in (
            self._to_server(reader, up_writer, conn),
            self._to_client(up_reader, writer, conn),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)

    @staticmethod
    async def _to_server(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _ProxiedConnection
    ) -> None:
        while data := await src.read(65536):
            conn.client_sent += data
            conn.client_sent_changed.set()
            if not conn.dropping:
                dst.write(data)
                await dst.drain()
        dst.close()  # pass the EOF on, so a graceful close completes promptly

    @staticmethod
    async def _to_client(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _ProxiedConnection
    ) -> None:
        while data := await src.read(65536):
            await conn.replies_flowing.wait()
            if not conn.dropping:
                dst.write(data)
                await dst.drain()
        dst.close()


@pytest.fixture
async def proxied_pg_url(pg_url: str) -> AsyncIterator[tuple[str, FaultProxy]]:
    """``pg_url`` rewritten to go through a :class:`FaultProxy`."""
    parts = urlsplit(pg_url)
    assert parts.hostname is not None
    async with FaultProxy(parts.hostname, parts.port or 5432) as proxy:
        netloc = parts.netloc.rpartition("@")[0]
        netloc = f"{netloc}@127.0.0.1:{proxy.port}" if netloc else f"127.0.0.1:{proxy.port}"
        yield parts._replace(netloc=netloc).geturl(), proxy


async def test_pg_publish_retries_on_half_open_connection(
    proxied_pg_url: tuple[str, FaultProxy],
) -> None:
    url, proxy = proxied_pg_url
    ps = PostgresPubSub(url, connect_timeout=0.5, health_check_interval=60)
    await ps.start()  # proxied connection 0: the listener
    try:
        rec = Recorder()
        await ps.subscribe("chan", rec)
        await ps.publish("chan", b"1")  # proxied connection 1: the publisher
        assert await rec.next() == (b"1", None)
        old_pid = ps.publisher_pid
        proxy.blackhole(1)
        # The first attempt times out on the dead connection; the retry uses a new one.
        async with asyncio.timeout(WAIT):
            await ps.publish("chan", b"2")
        assert await rec.next() == (b"2", None)
        assert ps.publisher_pid not in (None, old_pid)
        assert ps.reconnects == 0
    finally:
        await ps.close()


async def test_pg_health_check_detects_half_open_listener(
    proxied_pg_url: tuple[str, FaultProxy],
) -> None:
    url, proxy = proxied_pg_url
    ps = PostgresPubSub(url, reconnect_initial=0.02, connect_timeout=0.5, health_check_interval=0.1)
    await ps.start()  # proxied connection 0: the listener
    try:
        rec = Recorder()
        await ps.subscribe("chan", rec)
        proxy.blackhole(0)  # no termination signal ever reaches asyncpg
        payload, error = await rec.next()
        assert (payload, type(error)) == (b"", MessagesMayBeLost)
        assert ps.connected and ps.reconnects == 1
        await ps.publish("chan", b"after")
        assert await rec.next() == (b"after", None)
    finally:
        await ps.close()


async def test_pg_concurrent_subscribers_return_only_after_listen_completed(
    proxied_pg_url: tuple[str, FaultProxy],
) -> None:
    url, proxy = proxied_pg_url
    ps = PostgresPubSub(url, health_check_interval=60)
    await ps.start()  # proxied connection 0: the listener
    try:
        first, second = Recorder(), Recorder()
        proxy.conns[0].replies_flowing.clear()  # the server's LISTEN reply is held back
        t1 = asyncio.create_task(ps.subscribe("chan", first))
        t2 = asyncio.create_task(ps.subscribe("chan", second))
        await proxy.wait_client_sent(0, b'LISTEN "chan"')
        # Neither subscriber may believe it is listening yet: not the one that sent the
        # LISTEN, nor the concurrent second one for the same channel.
        assert not t1.done()
        assert not t2.done()
        proxy.conns[0].replies_flowing.set()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(t1, t2)
        assert proxy.conns[0].client_sent.count(b"LISTEN") == 1  # one LISTEN per channel
        await ps.publish("chan", b"both")
        assert await first.next() == (b"both", None)
        assert await second.next() == (b"both", None)
    finally:
        await ps.close()


async def test_pg_payloads_up_to_the_limit_arrive_and_oversized_or_invalid_ones_are_refused(
    make_pg_pubsub: PubSubFactory,
) -> None:
    ps = await make_pg_pubsub()
    rec = Recorder()
    await ps.subscribe("chan", rec)
    biggest = b"x" * MAX_PAYLOAD_BYTES
    await ps.publish("chan", biggest)
    assert await rec.next() == (biggest, None)
    with pytest.raises(ValueError, match="max"):
        await ps.publish("chan", b"x" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(ValueError, match="UTF-8"):
        await ps.publish("chan", b"\xff\xfe")
    with pytest.raises(ValueError, match="NUL"):
        await ps.publish("chan", b"a\x00b")


@pytest.mark.parametrize(
    "channel",
    ["", "Providers", "has-dash", "1starts_with_digit", 'x"; DROP TABLE t; --', "a b", "x" * 64],
)
async def test_pg_invalid_channel_name_rejected(
    make_pg_pubsub: PubSubFactory, channel: str
) -> None:
    ps = await make_pg_pubsub()
    with pytest.raises(ValueError):
        await ps.subscribe(channel, Recorder())
    with pytest.raises(ValueError):
        await ps.publish(channel)
    assert ps.connected  # nothing reached the server


async def test_pg_close_is_idempotent_and_unsubscribe_after_close_is_harmless(
    make_pg_pubsub: PubSubFactory,
) -> None:
    ps = await make_pg_pubsub()
    rec = Recorder()
    unsubscribe = await ps.subscribe("chan", rec)
    await ps.publish("chan")  # opens the publisher connection too
    assert await rec.next() == (b"", None)
    await ps.close()
    await ps.close()
    await unsubscribe()
    assert not ps.connected
    assert ps.listener_pid is None and ps.publisher_pid is None
    assert ps.reconnects == 0  # our own close is not a connection loss
    with pytest.raises(RuntimeError, match="closed"):
        await ps.publish("chan")
    with pytest.raises(RuntimeError, match="closed"):
        await ps.subscribe("chan", rec)
    assert await publish_quietly(ps, "chan") is False


async def test_pg_start_reports_unreachable_database_without_password() -> None:
    # A port that was just free: nothing listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ps = PostgresPubSub(
        f"postgresql://aibridge:s3cret-pw@127.0.0.1:{port}/aibridge", connect_timeout=2.0
    )
    with pytest.raises(ConnectionError) as info:
        async with asyncio.timeout(WAIT):
            await ps.start()
    message = str(info.value)
    assert "cannot connect to PostgreSQL" in message
    assert f"127.0.0.1:{port}" in message
    assert "s3cret-pw" not in message
    assert not ps.connected
    await ps.close()
