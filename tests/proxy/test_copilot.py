"""GitHub Copilot through the HTTPS proxy mode (VS Code's Copilot honours only
HTTPS_PROXY): the proxy's credentials identify the user, and the client's own
``Authorization`` is the Copilot token that reaches the Copilot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from aibridge.fakellm import Scenario
from aibridge.fakellm.copilot import FakeCopilot
from aibridge.fakellm.scenario import Usage
from aibridge.proxy.ca import CertificateAuthority
from aibridge.secrets_mask import mask_secret
from aibridge.testing.clients import closed_after_test
from aibridge.testing.copilot import COPILOT_HEADERS, COPILOT_TOKEN, OTHER_TOKEN
from aibridge.testing.proxy import ProxyStack, TLSUpstream, gateway_trusts, tls_upstream
from aibridge.testing.recorded import interceptions, recorded
from aibridge.testing.stack import TIMEOUT

USAGE = Usage(input_tokens=21, output_tokens=9)


@pytest.fixture
async def upstream(ca: CertificateAuthority, tmp_path: Path) -> AsyncIterator[TLSUpstream]:
    """The fake Copilot API over TLS (overrides the plain fake upstream of ``ps``)."""
    with gateway_trusts(ca):
        fake = FakeCopilot(tokens={COPILOT_TOKEN, OTHER_TOKEN})
        async with tls_upstream(ca, tmp_path, fake=fake) as up:
            yield up


def copilot_client(
    ps: ProxyStack, bundle: Path, monkeypatch: pytest.MonkeyPatch, **headers: str
) -> openai.AsyncOpenAI:
    """The SDK set up as Copilot in VS Code is: the Copilot API's own URL, the developer's
    token, Copilot's headers, and only HTTPS_PROXY (with the gateway key) pointing at us."""
    with monkeypatch.context() as m:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
            m.delenv(name, raising=False)
        m.setenv("HTTPS_PROXY", f"http://dev:{ps.s.user_token}@127.0.0.1:{ps.proxy.port}")
        m.setenv("SSL_CERT_FILE", str(bundle))
        return closed_after_test(
            openai.AsyncOpenAI(
                base_url=ps.up.url(),
                api_key=COPILOT_TOKEN,
                max_retries=0,
                default_headers={**COPILOT_HEADERS, **headers},
            )
        )


async def copilot_routed(ps: ProxyStack) -> FakeCopilot:
    await ps.s.add_provider("copilot", "copilot", keys=(), base_url=ps.up.url())
    async with asyncio.timeout(TIMEOUT):
        await ps.proxy.routing.wait_for(lambda r: r.lookup("localhost") is not None)
    fake = ps.up.fake
    assert isinstance(fake, FakeCopilot)
    return fake


async def test_copilot_through_the_proxy_sends_the_users_token_and_records_the_proxy_user(
    ps: ProxyStack, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copilot = await copilot_routed(ps)
    # A gateway key of someone else in X-AIBridge-Token changes nothing: the proxy's
    # credentials alone say who is calling.
    client = copilot_client(ps, ca_bundle, monkeypatch, **{"X-AIBridge-Token": ps.s.admin_token})
    copilot.enqueue(
        Scenario.text_reply("Blocking.", usage=USAGE),
        Scenario.text_reply("Streamed.", usage=USAGE),
        Scenario.text_reply("Responded.", usage=USAGE),
    )
    messages = [{"role": "user", "content": "Explain this file."}]
    async with asyncio.timeout(TIMEOUT):
        done = await client.chat.completions.create(model="gpt-4.1", messages=messages)
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=messages, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        response = await client.responses.create(model="gpt-5", input="Explain this file.")
    assert (done.choices[0].message.content, text) == ("Blocking.", "Streamed.")
    assert response.output_text == "Responded."

    sent = copilot.generation_requests()
    assert [r.path for r in sent] == ["/chat/completions", "/chat/completions", "/responses"]
    for r in sent:
        assert r.headers["Authorization"] == f"Bearer {COPILOT_TOKEN}"
        for name, value in COPILOT_HEADERS.items():
            assert r.headers.getall(name) == [value], name
        assert "X-AIBridge-Token" not in r.headers
        assert not [v for v in r.headers.values() if "aib-" in v]
    assert copilot.gateway_keys_seen == 0
    assert ps.mitm_requests("copilot") == 3

    await ps.s.flush_records()
    rows = await interceptions(ps.s.services)
    member = await ps.s.member_id()
    assert [(r.initiator_id, r.provider, r.model) for r in rows] == [
        (member, "copilot", "gpt-4.1"),
        (member, "copilot", "gpt-4.1"),
        (member, "copilot", "gpt-5"),
    ]
    for row in rows:
        assert (row.credential_kind, row.credential_hint) == ("byok", mask_secret(COPILOT_TOKEN))
        assert row.error_type is None
    first = await recorded(ps.s.services, rows[0].id)
    assert [(t.input_tokens, t.output_tokens) for t in first.token_usages] == [(21, 9)]


async def test_copilot_through_the_proxy_without_a_token_is_a_401_and_nothing_is_sent(
    ps: ProxyStack, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copilot = await copilot_routed(ps)
    client = copilot_client(ps, ca_bundle, monkeypatch)
    # The SDK insists on an API key; an empty Authorization is what a client without a
    # Copilot session sends.
    client = client.with_options(default_headers={"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as caught:
        async with asyncio.timeout(TIMEOUT):
            await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
            )
    assert "GitHub Copilot token is required" in caught.value.message
    assert copilot.requests == []
    await ps.s.flush_records()
    assert await interceptions(ps.s.services) == []
