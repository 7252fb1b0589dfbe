"""Tracing off costs nothing (no tracer, no exporter thread, no SDK import); a collector
that is down or hangs never affects requests, its failures are counted, and shutdown stays
bounded; bad ``OTEL_*`` values stop the start with the variable and the values it takes;
``propagate_trace_context`` is validated like every provider setting."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from aibridge import tracing
from aibridge.server import otel
from aibridge.server.tracing import TracingConfigError, tracing_config
from aibridge.testing.otlp import OTLPReceiver, otlp_receiver
from aibridge.testing.stack import TIMEOUT, Stack, stack

CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}


def exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("OtelBatch")]


async def chat(s: Stack, provider: str = "oa") -> None:
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            f"/{provider}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        assert resp.status == 200, await resp.text()


async def export_failures(s: Stack) -> float:
    resp = await s.client.get("/metrics")
    for line in (await resp.text()).splitlines():
        if line.startswith("aibridge_trace_export_failures_total "):
            return float(line.split()[1])
    raise AssertionError("aibridge_trace_export_failures_total missing from /metrics")


async def wait_failures(s: Stack, at_least: float) -> None:
    # The count moves in the exporter's thread: nothing to await, so poll (bounded).
    async with asyncio.timeout(TIMEOUT):
        while await export_failures(s) < at_least:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@pytest.fixture
async def rx() -> AsyncIterator[OTLPReceiver]:
    async with otlp_receiver() as receiver:
        yield receiver


async def test_tracing_off_makes_no_tracer_and_no_exporter_thread(
    db_url: str, tmp_path: Path
) -> None:
    # (A thread another test left stuck on a hung collector may still be around.)
    before = exporter_threads()
    async with stack(db_url, tmp_path, environ={"OTEL_TRACES_EXPORTER": "none"}) as s:
        await s.add_provider("oa", "openai")
        assert tracing.TRACER is None
        assert exporter_threads() == before
        await chat(s)
        resp = await s.client.get("/metrics")
        assert "aibridge_trace_export_failures" not in await resp.text()
    assert tracing.TRACER is None


async def test_tracing_on_runs_one_exporter_thread_and_removes_it_at_shutdown(
    db_url: str, tmp_path: Path, rx: OTLPReceiver
) -> None:
    before = exporter_threads()
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        assert tracing.TRACER is not None
        assert exporter_threads() == [*before, "OtelBatchSpanRecordProcessor"]
        assert await export_failures(s) == 0
    assert tracing.TRACER is None
    assert exporter_threads() == before


# Runs a gateway with tracing off in a fresh interpreter and serves one request: the
# OpenTelemetry trace SDK, its exporters, protobuf and gRPC are never imported.
LAZY = """
import asyncio, sys, tempfile, threading
from pathlib import Path
from aibridge.testing.databases import sqlite_file_url
from aibridge.testing.stack import stack
from aibridge import tracing

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with stack(sqlite_file_url(tmp), tmp, environ={}) as s:
        await s.add_provider("oa", "openai")
        resp = await s.client.post(
            "/oa/v1/chat/completions",
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        assert resp.status == 200, await resp.text()
        assert tracing.TRACER is None
        print("threads", sorted(t.name for t in threading.enumerate() if "Otel" in t.name))

asyncio.run(main())
# (redis imports the SDK's metrics package when it is installed: not tracing.)
loaded = sorted(
    m for m in sys.modules
    if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter",
                     "opentelemetry.proto", "google.protobuf", "grpc"))
    or m in ("aibridge.server.otel",)
)
print("loaded", ",".join(loaded) or "none")
"""


def test_tracing_off_never_imports_the_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2:] == ["threads []", "loaded none"], done.stdout


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_collector_refusing_exports_is_counted_and_requests_succeed(
    db_url: str, tmp_path: Path, rx: OTLPReceiver
) -> None:
    rx.status = 400  # not retryable: each export fails at once
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        await s.add_provider("oa", "openai")
        for _ in range(3):
            await chat(s)
        await wait_failures(s, 1)
    assert rx.exports >= 1 and rx.spans == []


async def test_collector_down_requests_succeed_and_shutdown_is_bounded(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own retry budget per export (it reads the process environment).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0.5")
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_BSP_SCHEDULE_DELAY": "20",
    }
    async with stack(db_url, tmp_path, environ=environ) as s:
        await s.add_provider("oa", "openai")
        for _ in range(3):
            await chat(s)
        await wait_failures(s, 1)
        began = time.monotonic()
    assert time.monotonic() - began < otel.SHUTDOWN_TIMEOUT + 5


async def test_hung_collector_never_holds_requests_or_shutdown(
    db_url: str, tmp_path: Path, rx: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx.hang = True
    monkeypatch.setattr(otel, "SHUTDOWN_TIMEOUT", 1.0)
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        await s.add_provider("oa", "openai")
        await chat(s)
        # The exporter thread is stuck in an export; requests go on regardless.
        async with asyncio.timeout(TIMEOUT):
            while rx.exports == 0:  # noqa: ASYNC110 - the export arrives from a thread
                await asyncio.sleep(0.02)
        began = time.monotonic()
        for _ in range(5):
            await chat(s)
        assert time.monotonic() - began < 5
        began = time.monotonic()
    # Bounded by the (patched) shutdown timeout, plus the rest of the shutdown.
    assert time.monotonic() - began < 1.0 + 5
    assert tracing.TRACER is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            "OTEL_TRACES_EXPORTER='jaeger' is not supported; use one of: otlp, none",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported; use one of: "
            "http/protobuf, grpc",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='thrift' is not supported",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER='sometimes' is not supported; use one of: always_on,",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "2",
            },
            "OTEL_TRACES_SAMPLER_ARG='2' must be a number from 0 to 1",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "soon"},
            "OTEL_BSP_SCHEDULE_DELAY='soon' must be a number of milliseconds",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            "must be an http:// or https:// URL",
        ),
    ],
)
def test_bad_values_name_the_variable_and_the_allowed_values(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(TracingConfigError) as err:
        tracing_config(env)
    assert message in str(err.value)


def test_configuration_defaults_and_endpoints() -> None:
    assert tracing_config({}) is None
    assert tracing_config({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing_config({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is None
    config = tracing_config({"OTEL_TRACES_EXPORTER": "OTLP"})
    assert config is not None
    assert (config.protocol, config.endpoint, config.service_name, config.sampler) == (
        "http/protobuf",
        "http://localhost:4318/v1/traces",
        "aibridge",
        "parentbased_always_on",
    )
    config = tracing_config(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}
    )
    assert config is not None and config.endpoint == "http://c:4318/v1/traces"
    config = tracing_config(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9999/custom",
        }
    )
    assert config is not None and config.endpoint == "http://t:9999/custom"
    config = tracing_config({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert config is not None and config.endpoint == "http://localhost:4317"
    config = tracing_config(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_SERVICE_NAME": "gw-eu",
        }
    )
    assert config is not None
    assert (config.sampler, config.sampler_arg, config.service_name) == (
        "parentbased_traceidratio",
        0.25,
        "gw-eu",
    )


async def test_a_bad_value_stops_the_start_before_anything_opens(
    db_url: str, tmp_path: Path
) -> None:
    before = exporter_threads()
    with pytest.raises(TracingConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        async with stack(
            db_url,
            tmp_path,
            environ={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "udp"},
        ):
            pass
    assert exporter_threads() == before


def test_serve_reports_a_bad_value_and_exits(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OTEL_TRACES_EXPORTER": "zipkin",
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("aibridge")),
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert "OTEL_TRACES_EXPORTER='zipkin' is not supported; use one of: otlp, none" in (
        done.stderr + done.stdout
    )


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_propagate_trace_context_must_be_a_boolean(
    db_url: str, tmp_path: Path, value: object
) -> None:
    async with stack(db_url, tmp_path) as s, asyncio.timeout(TIMEOUT):

        async def create(name: str, setting: object) -> aiohttp.ClientResponse:
            return await s.client.post(
                "/api/v1/providers",
                json={
                    "type": "openai",
                    "name": name,
                    "base_url": s.fake.url + "/v1",
                    "api_keys": ["sk-x-0001"],
                    "settings": {"propagate_trace_context": setting},
                },
                headers=s.admin_headers(),
            )

        resp = await create("bad", value)
        assert resp.status == 400, await resp.text()
        text = await resp.text()
        assert "settings.propagate_trace_context" in text
        assert "propagate_trace_context must be a boolean" in text
        resp = await create("good", True)
        assert resp.status == 201, await resp.text()
        got = await resp.json()
        assert got["settings"]["propagate_trace_context"] is True


async def test_shutdown_flushes_the_last_spans(
    db_url: str, tmp_path: Path, rx: OTLPReceiver
) -> None:
    # A minute between exports: only the shutdown's flush can deliver the spans.
    async with stack(db_url, tmp_path, environ=rx.environ(OTEL_BSP_SCHEDULE_DELAY="60000")) as s:
        await s.add_provider("oa", "openai")
        await chat(s)
        assert rx.exports == 0
    names = sorted(sp.name for sp in rx.spans if sp.name != "Intercept.RecordBatch")
    assert names == [
        "CachedBridgePool.Acquire",
        "CachedBridgePool.Build",
        "Intercept",
        "Intercept.ProcessRequest",
        "Intercept.ProcessRequest.Upstream",
    ]
