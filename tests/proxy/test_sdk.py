"""The official SDKs, configured only with HTTPS_PROXY and a CA bundle, through the proxy.

The SDK clients read HTTPS_PROXY and SSL_CERT_FILE from the environment when they are
built (httpx ``trust_env``); the environment is restored right after, so the gateway's own
upstream clients never see the proxy variables. The SDKs' base URL is the provider's
real one (the TLS fake upstream), exactly as without a gateway.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anthropic
import openai
import pytest

from aibridge.fakellm import Scenario
from aibridge.proxy.daemon import ProxyOptions, listener_tls
from aibridge.testing.clients import closed_after_test
from aibridge.testing.proxy import ProxyStack, proxy_for
from aibridge.testing.recorded import interceptions
from aibridge.testing.stack import PROVIDER_KEY, TIMEOUT

CLIENT_OWN_KEY = "sk-client-own-key-should-not-travel"


def _proxy_env(monkeypatch: pytest.MonkeyPatch, ps: ProxyStack, bundle: Path) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://dev:{ps.s.user_token}@127.0.0.1:{ps.proxy.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


async def _routed(ps: ProxyStack) -> None:
    async with asyncio.timeout(TIMEOUT):
        await ps.proxy.routing.wait_for(lambda r: r.lookup("localhost") is not None)


async def test_openai_sdk_through_the_proxy_is_governed_and_recorded_under_the_member(
    ps: ProxyStack, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ps.s.add_provider("openai", "openai", base_url=ps.up.url() + "/v1")
    await _routed(ps)
    with monkeypatch.context() as m:
        _proxy_env(m, ps, ca_bundle)
        client = closed_after_test(
            openai.AsyncOpenAI(base_url=ps.up.url() + "/v1", api_key=CLIENT_OWN_KEY, max_retries=0)
        )
    async with asyncio.timeout(TIMEOUT):
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert reply.choices[0].message.content
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello again"}],
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    sent = ps.up.fake.generation_requests()
    assert len(sent) == 2
    # The gateway called upstream with the pooled key, never the client's own key.
    assert {r.credential() for r in sent} == {PROVIDER_KEY}
    assert ps.mitm_requests("openai") == 2
    await ps.s.flush_records()
    rows = await interceptions(ps.s.services, initiator_id=await ps.s.member_id())
    assert [(r.provider_name, r.model) for r in rows] == [
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4o-mini"),
    ]


async def test_anthropic_sdk_through_the_proxy_is_governed_and_recorded_under_the_member(
    ps: ProxyStack, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ps.s.add_provider("claude", "anthropic", base_url=ps.up.url())
    await _routed(ps)
    with monkeypatch.context() as m:
        _proxy_env(m, ps, ca_bundle)
        client = closed_after_test(
            anthropic.AsyncAnthropic(base_url=ps.up.url(), api_key=CLIENT_OWN_KEY, max_retries=0)
        )
    async with asyncio.timeout(TIMEOUT):
        reply = await client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "hello"}],
        )
        assert reply.content
        chunks: list[str] = []
        async with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "hello again"}],
        ) as stream:
            async for piece in stream.text_stream:
                chunks.append(piece)
    assert "".join(chunks)
    sent = ps.up.fake.generation_requests()
    assert len(sent) == 2
    assert {r.credential() for r in sent} == {PROVIDER_KEY}
    assert ps.mitm_requests("claude") == 2
    await ps.s.flush_records()
    rows = await interceptions(ps.s.services, initiator_id=await ps.s.member_id())
    assert [(r.provider_name, r.model) for r in rows] == [
        ("claude", "claude-sonnet-4-5"),
        ("claude", "claude-sonnet-4-5"),
    ]


async def test_a_stream_through_the_proxy_reaches_the_sdk_live(
    ps: ProxyStack, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ps.s.add_provider("openai", "openai", base_url=ps.up.url() + "/v1")
    await _routed(ps)
    with monkeypatch.context() as m:
        _proxy_env(m, ps, ca_bundle)
        client = closed_after_test(
            openai.AsyncOpenAI(base_url=ps.up.url() + "/v1", api_key=CLIENT_OWN_KEY, max_retries=0)
        )
    release = asyncio.Event()
    # The upstream sends some deltas, then holds the stream open until released: the SDK
    # can only see them if every hop (gateway, proxy) relays them as they arrive.
    ps.up.fake.enqueue(Scenario.stall(release=release))
    try:
        async with asyncio.timeout(TIMEOUT):
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            first = ""
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = chunk.choices[0].delta.content
                    break
            assert first
            assert not release.is_set()
            await stream.close()
            # The client left: the proxy drops the gateway request, which drops upstream's.
            await ps.up.fake.disconnected.wait()
        assert not release.is_set()
    finally:
        release.set()


async def test_a_tls_listener_serves_an_sdk_with_an_https_proxy_url(
    ps: ProxyStack, ca_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, key = ps.ca.mint_leaf("127.0.0.1")
    (tmp_path / "listener.pem").write_bytes(chain)
    (tmp_path / "listener-key.pem").write_bytes(key)
    options = ProxyOptions(
        allowed_ports=frozenset({ps.up.port}),
        listen_tls=listener_tls(str(tmp_path / "listener.pem"), str(tmp_path / "listener-key.pem")),
    )
    await ps.s.add_provider("openai", "openai", base_url=ps.up.url() + "/v1")
    async with proxy_for(ps.s, ps.ca, tmp_path, options) as proxy:
        async with asyncio.timeout(TIMEOUT):
            await proxy.routing.wait_for(lambda r: r.lookup("localhost") is not None)
        with monkeypatch.context() as m:
            _proxy_env(m, ps, ca_bundle)
            # TLS to the proxy, then TLS to the provider host inside it.
            m.setenv("HTTPS_PROXY", f"https://dev:{ps.s.user_token}@127.0.0.1:{proxy.port}")
            client = closed_after_test(
                openai.AsyncOpenAI(
                    base_url=ps.up.url() + "/v1", api_key=CLIENT_OWN_KEY, max_retries=0
                )
            )
        # httpx builds the context for an https proxy when it connects (not with the
        # client), from SSL_CERT_FILE as well: as in a shell where it stays exported.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle))
        async with asyncio.timeout(TIMEOUT):
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
            )
            await client.close()
        assert reply.choices[0].message.content
        assert (
            proxy.metrics.registry.get_sample_value(
                "aibridge_proxy_mitm_requests_total", {"provider": "openai"}
            )
            == 1
        )
