"""OpenAI Responses over WebSocket through the gateway, against the fake upstream's
Responses WebSocket (:mod:`aibridge.fakellm.responses_ws`).

A client upgrades ``GET /openai/v1/responses`` with its gateway key, sends
``response.create`` messages and reads the events back; the gateway dials the upstream
socket with the pooled key, relays every frame unchanged and records one interception per
``response.create``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from aibridge.fakellm import Scenario, Usage
from aibridge.intercept.responses.websocket import MAX_CLIENT_MESSAGE, MAX_UPSTREAM_MESSAGE
from aibridge.secrets_mask import mask_secret
from aibridge.server.services import RESPONSES_SOCKETS
from aibridge.testing.openai_sdk import refusing_port
from aibridge.testing.recorded import Recorded, interceptions, recorded
from aibridge.testing.stack import PROVIDER_KEY, TIMEOUT, Stack, stack

Socket = aiohttp.ClientWebSocketResponse[bool]


def create(prompt: str, **extra: Any) -> bytes:
    """A Codex-like ``response.create`` message."""
    body = {
        "type": "response.create",
        "model": "gpt-4.1",
        "instructions": "You are a coding agent.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": False,
        "stream": True,
        **extra,
    }
    return orjson.dumps(body)


@asynccontextmanager
async def connect(
    s: Stack, provider: str = "openai", headers: dict[str, str] | None = None
) -> AsyncIterator[Socket]:
    """A client socket on ``/{provider}/v1/responses`` with the member's gateway key."""
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(TIMEOUT):
            ws = await session.ws_connect(
                f"{s.base}/{provider}/v1/responses",
                headers={"Authorization": f"Bearer {s.user_token}", **(headers or {})},
                max_msg_size=64 * 1024 * 1024,
            )
        try:
            yield ws
        finally:
            await ws.close()


async def handshake_error(s: Stack, provider: str = "openai", **headers: str) -> tuple[int, Any]:
    """The status and headers of a refused upgrade (fails the test if it succeeds)."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with connect(s, provider, headers):
            pass
    return info.value.status, info.value.headers


async def turn(ws: Socket, message: bytes) -> list[str]:
    """Send one ``response.create``; every text message up to its terminal event."""
    await ws.send_str(message.decode())
    received: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, (msg.type, msg.data)
            received.append(msg.data)
            kind = orjson.loads(msg.data)["type"]
            if kind in ("response.completed", "response.failed", "response.incomplete", "error"):
                return received


async def closed(ws: Socket) -> tuple[int | None, str]:
    """Read until the gateway closes the socket: its close code and reason."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return ws.close_code, str(msg.extra or "")


async def rows(s: Stack) -> list[Recorded]:
    """Every interception of the member, oldest first, with its child rows."""
    await s.flush_records()
    mine = await interceptions(s.services, initiator_id=await s.member_id())
    return [await recorded(s.services, row.id) for row in mine]


async def wait_closed_upstream(s: Stack, count: int = 1) -> None:
    """Wait until ``count`` upstream sockets have ended."""
    async with asyncio.timeout(TIMEOUT):
        while len(s.fake.websocket_close_codes) < count:
            s.fake.websocket_closed.clear()
            await s.fake.websocket_closed.wait()


@pytest.fixture
async def s(db_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with stack(db_url, tmp_path) as st:
        await st.add_provider("openai", "openai")
        yield st


async def test_two_turns_on_one_socket_are_two_interceptions_with_exact_usage(s: Stack) -> None:
    first = Usage(input_tokens=100, output_tokens=7, cache_read_tokens=40, reasoning_tokens=3)
    second = Usage(input_tokens=9, output_tokens=31, cache_read_tokens=1200)
    s.fake.enqueue(
        Scenario.text_reply("First answer.", usage=first),
        Scenario.thinking_reply(usage=second),
    )
    one, two = create("hello one"), create("hello two", previous_response_id="resp_prev")
    async with connect(s) as ws:
        received = await turn(ws, one)
        received += await turn(ws, two)
    # Frames relayed unchanged, in order, both ways.
    assert received == s.fake.websocket_sent
    sent = [r for r in s.fake.requests if r.method == "WS"]
    assert [r.body for r in sent] == [one, two]
    # One handshake upstream, with the pooled key and never the gateway key.
    handshakes = [r for r in s.fake.requests if r.method == "GET"]
    assert [r.path for r in handshakes] == ["/v1/responses"]
    assert handshakes[0].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert not any(s.user_token in v for v in handshakes[0].headers.values())
    assert not any(r.method == "POST" for r in s.fake.requests)

    got = await rows(s)
    assert [r.interception.error_type for r in got] == [None, None]
    assert [r.interception.model for r in got] == ["gpt-4.1", "gpt-4.1"]
    assert [uuid.UUID(str(r.interception.id)).version for r in got] == [7, 7]
    assert [r.interception.credential_hint for r in got] == [mask_secret(PROVIDER_KEY)] * 2
    assert [[p.prompt for p in r.prompts] for r in got] == [["hello one"], ["hello two"]]
    usages = [
        [
            (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.reasoning_tokens)
            for u in r.token_usages
        ]
        for r in got
    ]
    assert usages == [[(100, 7, 40, 3)], [(9, 31, 1200, 0)]]
    assert [u.provider_response_id for r in got for u in r.token_usages] == [
        req.response_id for req in sent
    ]
    assert [len(r.thoughts) for r in got] == [0, 1]


async def test_upstream_error_event_ends_the_interception_and_the_socket_stays_open(
    s: Stack,
) -> None:
    s.fake.enqueue(Scenario.http_error(429, message="slow down"), Scenario.text_reply("ok"))
    async with connect(s) as ws:
        refused = await turn(ws, create("first"))
        assert orjson.loads(refused[-1])["status"] == 429
        answered = await turn(ws, create("second"))
        assert orjson.loads(answered[-1])["type"] == "response.completed"
    got = await rows(s)
    assert [(r.interception.error_type, r.interception.error_message) for r in got] == [
        ("rate_limited", "slow down"),
        (None, None),
    ]


async def test_a_refused_create_gets_an_error_event_and_is_not_forwarded(s: Stack) -> None:
    async with connect(s) as ws:
        answer = await turn(ws, create("hi", model=5))
        event = orjson.loads(answer[-1])
        assert (event["type"], event["status"]) == ("error", 400)
        assert event["error"]["message"] == "model must be a string"
        background = await turn(ws, create("hi", background=True))
        assert orjson.loads(background[-1])["status"] == 501
        ok = await turn(ws, create("fine"))
        assert orjson.loads(ok[-1])["type"] == "response.completed"
    assert [r.body for r in s.fake.requests if r.method == "WS"] == [create("fine")]
    assert len(await rows(s)) == 1


async def test_handshake_fails_over_to_the_next_key(db_url: str, tmp_path: Path) -> None:
    keys = ["sk-first-key-00000001", "sk-second-key-0000002", "sk-third-key-00000003"]
    async with stack(db_url, tmp_path) as s:
        await s.add_provider("openai", "openai", keys=keys)
        s.fake.key_scenarios[keys[0]] = Scenario.http_error(429)
        s.fake.key_scenarios[keys[1]] = Scenario.http_error(401)
        async with connect(s) as ws:
            await turn(ws, create("hello"))
        tried = [r.headers["Authorization"] for r in s.fake.requests if r.method == "GET"]
        assert tried == [f"Bearer {k}" for k in keys]
        (row,) = await rows(s)
        assert row.interception.credential_hint == mask_secret(keys[2])
        assert row.interception.error_type is None


async def test_exhausted_keys_and_unreachable_upstream_refuse_the_upgrade_and_record_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        await s.add_provider("openai", "openai", keys=["sk-limited-key-000001"])
        s.fake.key_scenarios["sk-limited-key-000001"] = Scenario.http_error(429)
        status, headers = await handshake_error(s)
        assert status == 429 and headers["Retry-After"] == "7"
        # HTTP gets the same answer on the same route.
        resp = await s.client.post(
            "/openai/v1/responses",
            json={"model": "gpt-4.1", "input": "hi"},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        assert resp.status == 429
        with refusing_port() as port:
            await s.add_provider("down", "openai", base_url=f"http://127.0.0.1:{port}/v1")
            status, _ = await handshake_error(s, "down")
        assert status == 502
        # Any other refusal of the upgrade: the upstream's status.
        await s.add_provider("gone", "openai", keys=["sk-gone-key-000000001"])
        s.fake.key_scenarios["sk-gone-key-000000001"] = Scenario.http_error(404)
        status, _ = await handshake_error(s, "gone")
        assert status == 404
        got = await rows(s)
        # Only the HTTP request was an interception.
        assert [r.interception.error_type for r in got] == ["rate_limited"]


async def test_per_user_socket_limit_refuses_the_handshake_with_429(
    db_url: str, tmp_path: Path
) -> None:
    overrides = {"responses_websocket_per_user": 2}
    async with stack(db_url, tmp_path, settings_overrides=overrides) as s:
        await s.add_provider("openai", "openai")
        sockets = s.client.app[RESPONSES_SOCKETS]
        async with connect(s), connect(s) as second:
            status, _ = await handshake_error(s)
            assert status == 429
            assert sockets.count(await s.member_id()) == 2
            await second.close()
            await wait_closed_upstream(s, 1)
        # Both closed: the user may open sockets again.
        async with connect(s) as again:
            await turn(again, create("hi"))
        await wait_closed_upstream(s, 3)
        assert sockets.count(await s.member_id()) == 0
        assert len(sockets) == 0


async def test_cross_origin_handshake_is_403_and_same_origin_is_accepted(s: Stack) -> None:
    status, _ = await handshake_error(s, Origin="https://evil.example")
    assert status == 403
    async with connect(s, headers={"Origin": s.base}) as ws:
        await turn(ws, create("hi"))
    assert [r.headers.get("Origin") for r in s.fake.requests if r.method == "GET"] == [None]


async def test_switched_off_provider_answers_501(s: Stack) -> None:
    await s.add_provider("plain", "openai", settings={"responses_websocket": False})
    status, _ = await handshake_error(s, "plain")
    assert status == 501


async def test_binary_client_frame_closes_with_1003_and_closes_upstream(s: Stack) -> None:
    async with connect(s) as ws:
        await turn(ws, create("hi"))
        await ws.send_bytes(b"\x00\x01")
        code, _ = await closed(ws)
    assert code == 1003
    await wait_closed_upstream(s)


async def test_the_default_message_limits_are_32_and_16_mib(s: Stack) -> None:
    sockets = s.client.app[RESPONSES_SOCKETS]
    assert (sockets.max_client_message, sockets.max_upstream_message) == (
        MAX_CLIENT_MESSAGE,
        MAX_UPSTREAM_MESSAGE,
    )
    assert (MAX_CLIENT_MESSAGE, MAX_UPSTREAM_MESSAGE) == (32 * 1024 * 1024, 16 * 1024 * 1024)


async def test_oversize_client_message_closes_with_1009(s: Stack) -> None:
    # A small limit, so the whole message is sent before the gateway closes (a 32 MiB
    # write is cut off by the close, and the client then sees a reset, not the frame).
    s.client.app[RESPONSES_SOCKETS].max_client_message = 64 * 1024
    async with connect(s) as ws:
        await turn(ws, create("x" * (60 * 1024)))
        await ws.send_str(create("x" * (64 * 1024)).decode())
        code, _ = await closed(ws)
    assert code == 1009
    await wait_closed_upstream(s)
    assert len([r for r in s.fake.requests if r.method == "WS"]) == 1
    assert len(await rows(s)) == 1


async def test_oversize_upstream_message_closes_with_1009(s: Stack) -> None:
    s.client.app[RESPONSES_SOCKETS].max_upstream_message = 64 * 1024
    s.fake.enqueue(Scenario.text_reply("y" * (80 * 1024), chunks=4))
    async with connect(s) as ws:
        await ws.send_str(create("big").decode())
        code, _ = await closed(ws)
    assert code == 1009
    await wait_closed_upstream(s)
    (row,) = await rows(s)
    assert row.interception.error_type == "server_error"
    assert row.interception.error_message == "upstream sent a message larger than 65536 bytes"


async def test_client_disconnect_mid_response_records_it_and_closes_upstream(s: Stack) -> None:
    stall = Scenario.stall()
    s.fake.enqueue(stall)
    async with connect(s) as ws:
        await ws.send_str(create("long one").decode())
        async with asyncio.timeout(TIMEOUT):
            await stall.stalled.wait()
    await wait_closed_upstream(s)
    async with asyncio.timeout(TIMEOUT):
        await s.fake.disconnected.wait()
    assert s.fake.disconnects == 1
    (row,) = await rows(s)
    assert row.interception.error_type == "client_disconnected"


async def test_shutdown_lets_the_response_in_flight_finish_then_closes_with_1001(
    s: Stack,
) -> None:
    release = asyncio.Event()
    stall = Scenario.stall(release)
    s.fake.enqueue(stall)
    app = s.client.app
    async with connect(s) as ws:
        await ws.send_str(create("finish me").decode())
        async with asyncio.timeout(TIMEOUT):
            await stall.stalled.wait()
        draining = asyncio.create_task(app[RESPONSES_SOCKETS].shutdown())
        # New sockets are refused while the old ones drain.
        status, _ = await handshake_error(s)
        assert status == 503
        release.set()
        received: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while (msg := await ws.receive()).type is WSMsgType.TEXT:
                received.append(msg.data)
        assert orjson.loads(received[-1])["type"] == "response.completed"
        assert ws.close_code == 1001
        async with asyncio.timeout(TIMEOUT):
            await draining
    await wait_closed_upstream(s)
    assert s.fake.websocket_close_codes == [1001]
    (row,) = await rows(s)
    assert row.interception.error_type is None


async def test_shutdown_drain_deadline_closes_a_stalled_socket_with_1001(
    db_url: str, tmp_path: Path
) -> None:
    overrides = {"responses_websocket_drain_timeout": 0.2}
    async with stack(db_url, tmp_path, settings_overrides=overrides) as s:
        await s.add_provider("openai", "openai")
        stall = Scenario.stall()
        s.fake.enqueue(stall)
        async with connect(s) as ws:
            await ws.send_str(create("never ends").decode())
            async with asyncio.timeout(TIMEOUT):
                await stall.stalled.wait()
            # The client keeps reading while the gateway shuts down, as a real one does.
            (code, _), _ = await asyncio.gather(
                closed(ws), s.client.app[RESPONSES_SOCKETS].shutdown()
            )
        assert code == 1001
        (row,) = await rows(s)
        assert row.interception.error_type == "server_error"
        assert row.interception.error_message == "gateway shut down before the response completed"


async def test_byok_socket_goes_upstream_with_the_clients_own_key(
    db_url: str, tmp_path: Path
) -> None:
    own = "sk-my-own-openai-key-9876"
    async with stack(db_url, tmp_path) as s:
        await s.add_provider("openai", "openai", settings={"allow_byok": True})
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(TIMEOUT):
                ws = await session.ws_connect(
                    f"{s.base}/openai/v1/responses",
                    headers={"X-AIBridge-Token": s.user_token, "Authorization": f"Bearer {own}"},
                )
            await turn(ws, create("mine"))
            await ws.close()
        (handshake,) = [r for r in s.fake.requests if r.method == "GET"]
        assert handshake.headers["Authorization"] == f"Bearer {own}"
        assert "X-AIBridge-Token" not in handshake.headers
        (row,) = await rows(s)
        assert (row.interception.credential_kind, row.interception.credential_hint) == (
            "byok",
            mask_secret(own),
        )


async def test_stopping_the_server_closes_open_sockets_with_1001(s: Stack) -> None:
    sockets = s.client.app[RESPONSES_SOCKETS]
    member = await s.member_id()
    async with connect(s) as ws:
        await turn(ws, create("hi"))
        # The production runner's cleanup: listener stopped, then aiohttp's shutdown
        # signal, then the handlers still running are awaited.
        (code, _), _ = await asyncio.gather(closed(ws), s.client.server.close())
    assert code == 1001
    # The handler is cancelled while closing: its lease is given back all the same (it
    # used to be kept, and the shutdown waited out its whole close deadline).
    assert sockets.count(member) == 0
    assert len(sockets) == 0
    await wait_closed_upstream(s)
    assert s.fake.websocket_close_codes == [1001]


async def test_upstream_closing_mid_response_ends_it_as_an_upstream_failure(s: Stack) -> None:
    s.fake.enqueue(Scenario.drop())
    async with connect(s) as ws:
        await ws.send_str(create("cut short").decode())
        code, _ = await closed(ws)
    assert code == 1011
    (row,) = await rows(s)
    assert row.interception.error_type == "server_error"
    assert row.interception.error_message == (
        "upstream closed the WebSocket (code 1011) before the response completed"
    )
