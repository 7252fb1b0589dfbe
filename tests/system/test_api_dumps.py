"""API dumps end to end: the gateway on a real port, the fake upstream, files on disk.

One pair of files per upstream call (bridged blocking, streamed as it arrives, each call of
the MCP inner loop, passthrough in its own folder), credentials masked, JSON pretty,
0600 files in 0700 folders, and the per-file and per-directory caps.
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from pathlib import Path

import anthropic
import orjson
import pytest

from aibridge.fakellm import Scenario
from aibridge.fakellm.tooluse import tool_caller
from aibridge.providers.apidump import TRUNCATED, ApiDumps
from aibridge.testing.fake_bedrock import SECRET_KEY, FakeBedrock
from aibridge.testing.mcp_server import install_mcp_servers, mcp_server, server_settings
from aibridge.testing.stack import PROVIDER_KEY, TIMEOUT, Stack, stack
from tests.bedrock.test_gateway import HI, SONNET, bedrock_settings
from tests.system.test_mcp_injection import ADD, LOOKUP

BYOK_KEY = "sk-client-own-key-0123456789"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessiontoken0123456789"


async def flushed(s: Stack) -> None:
    """Wait until every dump piece queued so far is on disk."""
    async with asyncio.timeout(TIMEOUT):
        assert await asyncio.to_thread(s.services.upstream.dumps.flush, TIMEOUT)


def files(root: Path) -> list[Path]:
    """Every file under ``root``, sorted by path."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def split(path: Path) -> tuple[list[str], bytes]:
    """A dump file's head lines (start line and headers) and its body."""
    data = path.read_bytes()
    head, _, body = data.partition(b"\n\n")
    return head.decode().splitlines(), body


async def chat(s: Stack, provider: str, body: dict[str, object]) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            f"/{provider}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        data = await resp.read()
        assert resp.status == 200, data
        return data


async def test_a_blocking_call_is_one_masked_pretty_pair(sqlite_url: str, tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("oa", "openai", settings={"api_dump_dir": str(root)})
        s.fake.enqueue(Scenario.text_reply("dumped"))
        await chat(
            s, "oa", {"model": "org/gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
        )
        await flushed(s)
        rec = await s.only_recording()
        found = files(root)
        stems = {p.name.split(".", 1)[0] for p in found}
        assert len(stems) == 1, found
        (stem,) = stems
        # {dir}/{provider}/{model, "/" → "-"}/{millis}-{interception id}-{seq}
        assert [p.relative_to(root).as_posix() for p in found] == [
            f"oa/org-gpt-4.1/{stem}.req.txt",
            f"oa/org-gpt-4.1/{stem}.resp.txt",
        ]
        assert str(rec.interception.id) in stem
        req_head, req_body = split(found[0])
        assert req_head[0].startswith("POST http://127.0.0.1:") and req_head[0].endswith(
            "/v1/chat/completions"
        )
        headers = req_head[1:]
        names = [h.split(":", 1)[0].lower() for h in headers]
        assert names == sorted(names) and "accept-encoding" in names
        auth = [h for h in headers if h.lower().startswith("authorization:")]
        assert auth and PROVIDER_KEY not in found[0].read_text()
        assert auth[0].endswith(PROVIDER_KEY[-4:])
        # Pretty-printed, key order kept.
        assert req_body.startswith(b'{\n  "model": "org/gpt-4.1",\n  "messages"')
        resp_head, resp_body = split(found[1])
        assert resp_head[0] == "HTTP/1.1 200 OK"
        assert b"\n  " in resp_body and orjson.loads(resp_body)["choices"][0]["message"][
            "content"
        ] == ("dumped")
        for path in found:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for folder in (root, root / "oa", root / "oa" / "org-gpt-4.1"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700


async def test_byok_key_and_gateway_token_are_masked(sqlite_url: str, tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(
            "oa", "openai", settings={"api_dump_dir": str(root), "allow_byok": True}
        )
        s.fake.enqueue(Scenario.text_reply("own key"))
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/oa/v1/chat/completions",
                json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
                headers={
                    "X-AIBridge-Token": s.user_token,
                    "Authorization": f"Bearer {BYOK_KEY}",
                },
            )
            assert resp.status == 200, await resp.text()
        await flushed(s)
        text = "".join(p.read_text() for p in files(root))
        assert "Authorization: Bea…" in text
        assert BYOK_KEY not in text and s.user_token not in text
        assert BYOK_KEY[-4:] in text


async def test_a_stream_is_written_as_it_arrives(sqlite_url: str, tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    release = asyncio.Event()
    stall = Scenario.stall(release, deltas_before=2)
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("oa", "openai", settings={"api_dump_dir": str(root)})
        s.fake.enqueue(stall)
        body = {
            "model": "gpt-4.1",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/oa/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200
            await stall.stalled.wait()
            # The upstream is mid-stream: what it sent so far is already in the dump.
            first = await resp.content.readany()
            await flushed(s)
            (resp_file,) = [p for p in files(root) if p.name.endswith(".resp.txt")]
            head, partial = split(resp_file)
            assert head[0] == "HTTP/1.1 200 OK"
            assert any(h.startswith("Content-Type: text/event-stream") for h in head)
            assert partial.startswith(b"data: ") and b"[DONE]" not in partial
            assert first and b"data: " in first
            release.set()
            rest = await resp.read()
        await flushed(s)
        _, whole = split(resp_file)
        # The raw SSE bytes the upstream sent (no pretty-printing of a stream): what was
        # dumped mid-stream, then the rest — including the usage chunk the gateway asked
        # for and hid from the client.
        assert whole.startswith(partial) and whole.startswith(first)
        assert whole.rstrip().endswith(b"data: [DONE]") and rest.rstrip().endswith(b"[DONE]")
        assert b'"usage"' in whole


async def test_each_inner_loop_call_gets_its_own_pair(sqlite_url: str, tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    async with mcp_server("test") as mcp, stack(sqlite_url, tmp_path) as s:
        await s.add_provider("mcp-chat", "openai", settings={"api_dump_dir": str(root)})
        install_mcp_servers(s.services, server_settings(mcp.url))
        s.fake.responder = tool_caller([ADD, LOOKUP], answer="Final: {results}")
        await chat(
            s, "mcp-chat", {"model": "gpt-4.1", "messages": [{"role": "user", "content": "2+40"}]}
        )
        await flushed(s)
        rec = await s.only_recording()
        found = files(root / "mcp-chat" / "gpt-4.1")
        reqs = [p for p in found if p.name.endswith(".req.txt")]
        resps = [p for p in found if p.name.endswith(".resp.txt")]
        assert len(reqs) == len(resps) == 3 == len(s.fake.generation_requests())
        assert all(str(rec.interception.id) in p.name for p in found)
        # In call order (the sequence number), the later requests carry the tool results.
        reqs.sort(key=lambda p: int(p.name.split(".")[0].rsplit("-", 1)[1]))
        bodies = [orjson.loads(split(p)[1]) for p in reqs]
        assert [len(b["messages"]) for b in bodies] == [1, 3, 5]


async def test_passthrough_calls_have_their_own_folder(sqlite_url: str, tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("oa", "openai", settings={"api_dump_dir": str(root)})
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get(
                "/oa/v1/models", headers={"Authorization": f"Bearer {s.user_token}"}
            )
            assert resp.status == 200
            await resp.read()
        await flushed(s)
        found = files(root)
        assert [p.parent.relative_to(root).as_posix() for p in found] == ["oa/passthrough"] * 2
        req, res = found
        assert "-v1-models-" in req.name and req.name.endswith(".req.txt")
        assert res.name.endswith(".resp.txt")
        assert split(req)[0][0].startswith("GET ") and PROVIDER_KEY not in req.read_text()
        assert split(res)[0][0] == "HTTP/1.1 200 OK"


async def test_the_global_default_applies_without_a_provider_setting(
    sqlite_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "global"
    async with stack(sqlite_url, tmp_path, settings_overrides={"api_dump_dir": root}) as s:
        await s.add_provider("oa", "openai")
        await chat(s, "oa", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        await flushed(s)
        assert [p.name.rsplit(".", 2)[-2] for p in files(root / "oa" / "m")] == ["req", "resp"]


async def test_dumps_are_off_by_default(sqlite_url: str, tmp_path: Path) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        assert s.services.upstream.dumps.default_dir is None
        await s.add_provider("oa", "openai")
        await chat(s, "oa", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert s.services.upstream.dumps.for_dir(None) is None


async def test_the_setting_is_validated(sqlite_url: str, tmp_path: Path) -> None:
    async with stack(sqlite_url, tmp_path) as s, asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            "/api/v1/providers",
            json={
                "type": "openai",
                "name": "oa",
                "base_url": s.fake.url + "/v1",
                "api_keys": ["sk-x"],
                "settings": {"api_dump_dir": "relative/dir"},
            },
            headers=s.admin_headers(),
        )
        assert resp.status == 400
        assert "api_dump_dir must be an absolute directory path" in await resp.text()


async def test_an_unreachable_upstream_writes_a_request_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "dumps"
    async with stack(sqlite_url, tmp_path) as s:
        # Port 9 (discard): nothing listens on loopback, the connection is refused.
        await s.add_provider(
            "gone",
            "openai",
            base_url="http://127.0.0.1:9/v1",
            settings={"api_dump_dir": str(root)},
        )
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/gone/v1/chat/completions",
                json={"model": "m", "messages": []},
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 502
        await flushed(s)
        suffixes = sorted(p.name.split(".", 1)[1] for p in files(root))
        assert suffixes == ["req.txt", "req_error.txt"]


def _write(dumps: ApiDumps, root: Path, name: str, data: bytes) -> None:
    dumper = dumps.for_dir(str(root))
    assert dumper is not None
    dumper.writer.put(root / "p" / name, data)


def test_the_file_cap_truncates_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    dumps = ApiDumps(max_file_bytes=1024, max_dir_bytes=1024 * 1024)
    try:
        for _ in range(3):
            _write(dumps, root, "big.resp.txt", b"x" * 600)
        assert dumps.flush(TIMEOUT)
        data = (root / "p" / "big.resp.txt").read_bytes()
        assert data == b"x" * 1024 + TRUNCATED
    finally:
        dumps.close()


def test_the_directory_cap_removes_the_oldest_first(tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    # A file left by an earlier run counts (and is the oldest).
    (root / "p").mkdir(parents=True)
    old = root / "p" / "0-old.resp.txt"
    old.write_bytes(b"o" * 1000)
    os.utime(old, (1, 1))
    dumps = ApiDumps(max_file_bytes=4096, max_dir_bytes=3000)
    try:
        for i in range(1, 5):
            _write(dumps, root, f"{i}.resp.txt", bytes([48 + i]) * 1000)
            assert dumps.flush(TIMEOUT)
        names = sorted(p.name for p in files(root))
        assert names == ["2.resp.txt", "3.resp.txt", "4.resp.txt"]
        assert sum(p.stat().st_size for p in files(root)) <= 3000
    finally:
        dumps.close()


@pytest.mark.parametrize(
    ("model", "folder"),
    [("../../etc", "-..-etc"), ("a b/c", "a_b-c"), ("", "unknown"), ("..", "_")],
)
def test_client_chosen_names_stay_inside_the_directory(
    tmp_path: Path, model: str, folder: str
) -> None:
    dumps = ApiDumps(tmp_path)
    try:
        dumper = dumps.for_dir(None)
        assert dumper is not None
        call = dumper.bridged("prov", model, uuid.uuid4(), None)
        path = call._path(".req.txt")
        assert path.parent == tmp_path / "prov" / folder
    finally:
        dumps.close()


async def test_bedrock_calls_are_dumped_signed_and_masked(sqlite_url: str, tmp_path: Path) -> None:
    """A Bedrock blocking call and a stream each get their pair: the signed request as
    Bedrock received it (the transformed body, the SigV4 signature and session token
    masked) and the response, the binary event stream as it arrived."""
    root = tmp_path / "dumps"
    fake = FakeBedrock()
    settings = bedrock_settings(session_token=SESSION_TOKEN) | {"api_dump_dir": str(root)}
    async with fake.serve(), stack(sqlite_url, tmp_path) as s:
        await s.add_provider("bedrock", "bedrock", keys=(), base_url=fake.url, settings=settings)
        sdk = anthropic.AsyncAnthropic(
            base_url=s.base + "/bedrock", api_key=s.user_token, max_retries=0
        )
        async with asyncio.timeout(TIMEOUT):
            await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HI)
            async with sdk.messages.stream(
                model="claude-sonnet-4-5", max_tokens=50, messages=HI
            ) as stream:
                streamed = "".join([t async for t in stream.text_stream])
        await flushed(s)
    found = files(root)
    folder = root / "bedrock" / SONNET.replace(":", "_")
    assert {p.parent for p in found} == {folder}, found
    requests = [p for p in found if p.name.endswith(".req.txt")]
    responses = [p for p in found if p.name.endswith(".resp.txt")]
    assert len(requests) == len(responses) == 2
    text = "".join(p.read_text(errors="replace") for p in requests)
    assert SECRET_KEY not in text and SESSION_TOKEN not in text and s.user_token not in text
    heads = [split(p)[0] for p in requests]
    assert sorted(h[0].rsplit("/", 1)[1] for h in heads) == [
        "invoke",
        "invoke-with-response-stream",
    ]
    for head in heads:
        auth = [h for h in head if h.lower().startswith("authorization:")]
        assert auth and "Signature=" not in auth[0]
        assert any(h.lower().startswith("x-amz-security-token:") for h in head)
    bodies = [orjson.loads(split(p)[1]) for p in requests]
    assert all(b["anthropic_version"] == "bedrock-2023-05-31" for b in bodies)
    assert all("model" not in b for b in bodies)
    stream_resp = next(p for p in responses if any("eventstream" in h for h in split(p)[0]))
    # The raw event stream: binary frames, the streamed text inside them.
    raw = split(stream_resp)[1]
    assert raw and streamed and b"bytes" in raw
