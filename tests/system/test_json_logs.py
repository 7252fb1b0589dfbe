"""JSON logs end to end: at ``--log-level debug`` with every third-party logger let through,
each request writes exactly one parseable access line with its fields, and no line — the
gateway's, aiohttp's, aiosqlite's, SQLAlchemy's — shows a secret sent in any header or body
field, stored as a provider key, or used as a gateway key."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aibridge.fakellm import Scenario, Usage
from aibridge.loglevels import LogLevelsError, parse_log_levels
from aibridge.logredact import redact
from aibridge.secrets_mask import mask_secret
from aibridge.server.accesslog import REQUEST_ID_HEADER
from aibridge.telemetry import setup_logging
from aibridge.testing.stack import PROVIDER_KEY, TIMEOUT, Stack, stack

# No known key shape: only the registry of stored secrets can mask it.
SECOND_KEY = "opaque-provider-credential-7777"
BYOK_KEY = "sk-byok-client-own-key-5555"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The process's logging set up as ``serve --log-format json --log-level debug
    --log-levels aiosqlite=debug,sqlalchemy=debug,aiohttp.access=debug`` would, into a
    buffer; restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    names = ("aiosqlite", "sqlalchemy", "aiohttp.access", "aiohttp.server")
    saved = {n: logging.getLogger(n).level for n in names}
    setup_logging(
        "debug",
        "json",
        levels=parse_log_levels("aiosqlite=debug,sqlalchemy=debug,aiohttp.access=debug"),
    )
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every line written so far, parsed (fails on a line that is not one JSON object)."""
    out = []
    for line in buffer.getvalue().splitlines():
        parsed = orjson.loads(line)
        assert isinstance(parsed, dict), line
        out.append(parsed)
    return out


async def send(s: Stack, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.request(method, path, **kwargs)
        await resp.read()
        assert REQUEST_ID_HEADER in resp.headers, (path, resp.status, dict(resp.headers))
        return resp.status, resp.headers[REQUEST_ID_HEADER]


async def test_one_json_access_line_per_request_and_no_secret_in_any_line(
    sqlite_url: str, tmp_path: Path, captured: io.StringIO
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        # Provider keys and a Bedrock-style secret go through the admin API and the store.
        await s.add_provider(
            "oa", "openai", keys=[PROVIDER_KEY, SECOND_KEY], settings={"allow_byok": True}
        )
        secrets = [PROVIDER_KEY, SECOND_KEY, BYOK_KEY, AWS_SECRET, s.user_token, s.admin_token]
        everywhere = " ".join(secrets)
        s.fake.enqueue(Scenario.text_reply("ok", usage=Usage(input_tokens=11, output_tokens=7)))
        body = {
            "model": "gpt-4.1",
            "user": everywhere,
            "metadata": {"api_key": PROVIDER_KEY, "secret_access_key": AWS_SECRET},
            "messages": [
                {"role": "system", "content": f"key={PROVIDER_KEY} token: {s.user_token}"},
                {"role": "user", "content": everywhere},
            ],
        }
        headers = {
            "Authorization": f"Bearer {s.user_token}",
            "X-Api-Key": PROVIDER_KEY,
            "Api-Key": SECOND_KEY,
            "Cookie": f"aibridge_session={s.admin_token}",
            "X-Debug": everywhere,
            "User-Agent": f"agent/1.0 {BYOK_KEY}",
        }
        sent: list[tuple[int, str]] = []
        sent.append(
            await send(
                s,
                "POST",
                f"/oa/v1/chat/completions?key={PROVIDER_KEY}",
                json=body,
                headers=headers,
            )
        )
        # BYOK: the client's own key upstream, the gateway key in X-AIBridge-Token.
        s.fake.enqueue(Scenario.text_reply("ok", usage=Usage(input_tokens=3, output_tokens=2)))
        sent.append(
            await send(
                s,
                "POST",
                "/oa/v1/chat/completions",
                json=body,
                headers={"X-AIBridge-Token": s.user_token, "Authorization": f"Bearer {BYOK_KEY}"},
            )
        )
        # A bad key, a passthrough, the admin API and an unknown route.
        sent.append(
            await send(
                s,
                "POST",
                "/oa/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {s.user_token}x"},
            )
        )
        sent.append(
            await send(
                s, "GET", "/oa/v1/models", headers={"Authorization": f"Bearer {s.user_token}"}
            )
        )
        sent.append(await send(s, "GET", "/api/v1/users", headers=s.admin_headers()))
        sent.append(
            await send(s, "GET", "/api/v1/users", headers={"Authorization": f"Bearer {BYOK_KEY}"})
        )
        await s.flush_records()
        member_id = str(await s.member_id())

    records = lines(captured)
    text = captured.getvalue()
    # The test reached the logger that used to leak: aiosqlite printed the INSERT of the
    # stored key (masked).
    assert any(
        r["logger"] == "aiosqlite"
        and "INSERT INTO" in r["msg"]
        and mask_secret(SECOND_KEY) in r["msg"]
        for r in records
    )
    assert any(r["logger"].startswith("sqlalchemy") for r in records)
    for secret in secrets:
        assert secret not in text, secret
        # Nor JSON-escaped (the AWS secret has slashes).
        assert orjson.dumps(secret).decode()[1:-1] not in text, secret
    # The masked hints are what shows instead.
    assert f"sk-…{PROVIDER_KEY[-4:]}" in text

    access = [r for r in records if r["logger"] == "aibridge.access"]
    by_id = {r["request_id"]: r for r in access}
    # Exactly one line per request: the ids the responses carried, each once.
    assert sorted(
        r["request_id"]
        for r in access
        if r["request_id"] in dict((rid, status) for status, rid in sent)
    ) == sorted(rid for _status, rid in sent)
    assert len(by_id) == len(access)
    chat, byok, bad, models, admin, admin_bad = (by_id[rid] for _status, rid in sent)
    assert [st for st, _rid in sent] == [200, 200, 401, 200, 200, 401]
    fields = {
        "request_id", "user", "user_id", "provider", "model", "route", "method", "path",
        "status", "duration_ms", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_tokens", "cost_usd", "error_type", "trace_id",
    }  # fmt: skip
    for line in access:
        assert fields <= set(line), line
        assert line["level"] == "info" and line["trace_id"] is None
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert (chat["user"], chat["user_id"], chat["provider"], chat["model"]) == (
        "dev",
        member_id,
        "oa",
        "gpt-4.1",
    )
    assert (chat["route"], chat["status"], chat["error_type"]) == ("chat", 200, None)
    assert (chat["input_tokens"], chat["output_tokens"]) == (11, 7)
    assert chat["path"] == "/oa/v1/chat/completions"  # no query
    assert (byok["input_tokens"], byok["output_tokens"], byok["user"]) == (3, 2, "dev")
    assert (bad["status"], bad["user"], bad["provider"]) == (401, None, None)
    assert (models["route"], models["provider"], models["user"]) == ("passthrough", "oa", "dev")
    assert (admin["route"], admin["user"], admin["status"]) == ("/api/v1/users", "admin", 200)
    assert admin_bad["status"] == 401


async def test_a_failed_upstream_call_logs_its_error_type(
    sqlite_url: str, tmp_path: Path, captured: io.StringIO
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("oa", "openai")
        s.fake.enqueue(Scenario.http_error(500, message="boom"))
        status, rid = await send(
            s,
            "POST",
            "/oa/v1/chat/completions",
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
    assert status == 500
    (line,) = [r for r in lines(captured) if r.get("request_id") == rid]
    assert (line["status"], line["error_type"], line["route"]) == (500, "server_error", "chat")


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefgh12345678",
        '{"x-api-key": "plainsecretvalue99"}',
        "password=hunter2hunter2",
        "aib-0a1b2c3d4e5f-AAAAbbbbCCCCddddEEEEffff0000",
        "sk-proj-abcdefghijklmnop",
    ],
)
def test_secret_shapes_are_masked(text: str) -> None:
    masked = redact(text)
    assert masked != text
    secret = text.rsplit(" ", 1)[-1].split("=", 1)[-1].strip('"{}')
    assert secret[-8:] not in masked


def test_ordinary_text_is_left_alone() -> None:
    text = 'POST /oa/v1/chat/completions 200 {"max_tokens": 100, "input_tokens": 11}'
    assert redact(text) == text


@pytest.mark.parametrize("value", ["aiosqlite", "aiosqlite=loud", "=debug", "a=debug,b"])
def test_bad_log_levels_name_the_fix(value: str) -> None:
    with pytest.raises(LogLevelsError, match="expected LOGGER=LEVEL"):
        parse_log_levels(value)


def test_log_levels_parse() -> None:
    assert parse_log_levels(" aibridge.pool=DEBUG, aiosqlite=info ,") == {
        "aibridge.pool": "debug",
        "aiosqlite": "info",
    }
