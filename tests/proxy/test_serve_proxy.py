"""``aibridge serve --proxy-listen``: a real gateway process with the proxy beside it; the
official ``openai`` SDK, configured only with HTTPS_PROXY and the CA bundle, is governed by
it. The gateway process trusts the test CA for its upstream through SSL_CERT_FILE."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import openai
import pytest

from aibridge.proxy.ca import CertificateAuthority
from aibridge.testing.clients import closed_after_test
from aibridge.testing.gateway import TOKEN_RE
from aibridge.testing.proxy import TLSUpstream
from aibridge.testing.replicas import free_port, poll, start_replica
from aibridge.testing.stack import PROVIDER_KEY, TIMEOUT


async def test_serve_with_proxy_listen_governs_an_sdk_that_only_has_https_proxy(
    upstream: TLSUpstream,
    ca: CertificateAuthority,
    ca_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca_dir = tmp_path / "ca"
    cert_path, key_path = ca.save(ca_dir)
    proxy_port = free_port()
    gw = await start_replica(
        "gw",
        None,
        tmp_path / "data",
        env={
            "AIBRIDGE_PROXY_LISTEN": f"127.0.0.1:{proxy_port}",
            "AIBRIDGE_PROXY_ALLOWED_PORTS": f"443,{upstream.port}",
            "AIBRIDGE_PROXY_CA_CERT": str(cert_path),
            "AIBRIDGE_PROXY_CA_KEY": str(key_path),
            "SSL_CERT_FILE": str(ca_bundle),
        },
    )
    try:
        await gw.wait_for_log("aibridge proxy listening", timeout=TIMEOUT)
        found = TOKEN_RE.search("\n".join(gw.stdout))
        assert found is not None, gw.stdout
        admin = found.group(0)
        headers = {"Authorization": f"Bearer {admin}"}
        async with aiohttp.ClientSession() as http, asyncio.timeout(TIMEOUT):
            resp = await http.post(
                gw.url + "/api/v1/providers",
                json={
                    "type": "openai",
                    "name": "openai",
                    "base_url": upstream.url() + "/v1",
                    "api_keys": [PROVIDER_KEY],
                },
                headers=headers,
            )
            assert resp.status == 201, await resp.text()

            async def routed() -> bool:
                async with http.get(gw.url + "/metrics", headers=headers) as m:
                    return 'aibridge_proxy_provider_info{provider_name="openai"' in await m.text()

            await poll(routed, TIMEOUT, "the proxy to route the new provider")
        with monkeypatch.context() as m:
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
                m.delenv(name, raising=False)
            m.setenv("HTTPS_PROXY", f"http://admin:{admin}@127.0.0.1:{proxy_port}")
            m.setenv("SSL_CERT_FILE", str(ca_bundle))
            client = closed_after_test(
                openai.AsyncOpenAI(base_url=upstream.url() + "/v1", api_key="sk-own", max_retries=0)
            )
        async with asyncio.timeout(TIMEOUT):
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text
        sent = upstream.fake.generation_requests()
        assert [r.credential() for r in sent] == [PROVIDER_KEY]
    finally:
        await gw.stop()
