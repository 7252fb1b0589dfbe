"""The gateway's lock-free metrics export exactly what ``prometheus_client``'s would."""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from aibridge.loop_metrics import LoopCounter, LoopHistogram
from aibridge.providers.keyring import FAILOVER_ATTEMPT_BUCKETS
from aibridge.telemetry import GatewayMetrics

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def reference(registry: CollectorRegistry) -> dict[str, object]:
    """The metrics as ``GatewayMetrics`` declared them with ``prometheus_client``, in the
    same order and with the same names, help texts and labels."""
    metrics = GatewayMetrics()
    return {
        "interceptions": Counter(
            "aibridge_interceptions_total",
            metrics.interceptions.documentation,
            ["provider", "api", "outcome"],
            registry=registry,
        ),
        "duration": Histogram(
            "aibridge_interception_duration_seconds",
            metrics.duration.documentation,
            ["provider", "api"],
            buckets=BUCKETS,
            registry=registry,
        ),
        "inflight": Gauge(
            "aibridge_interceptions_inflight",
            metrics.inflight.documentation,
            ["provider", "api"],
            registry=registry,
        ),
        "passthrough": Counter(
            "aibridge_passthrough_total",
            metrics.passthrough.documentation,
            ["provider", "method"],
            registry=registry,
        ),
        "tokens": Counter(
            "aibridge_tokens_total",
            metrics.tokens.documentation,
            ["provider", "model", "type"],
            registry=registry,
        ),
        "injected_tools": Counter(
            "aibridge_injected_tool_invocations_total",
            metrics.injected_tools.documentation,
            ["provider", "model", "server", "name"],
            registry=registry,
        ),
    }


def exercise(get: dict[str, object]) -> None:
    """The same updates on either implementation (children created in a mixed order)."""
    inflight, duration, outcomes = get["inflight"], get["duration"], get["interceptions"]
    tokens, passthrough = get["tokens"], get["passthrough"]
    inflight.labels("openai", "chat").inc()  # type: ignore[attr-defined]
    inflight.labels("anthropic", "messages").inc()  # type: ignore[attr-defined]
    # Every bucket edge, between edges, past the last one, zero.
    for value in (0, 0.05, 0.07, 0.1, 1, 2.4999, 2.5, 600, 601.5, 1e9):
        duration.labels("openai", "chat").observe(value)  # type: ignore[attr-defined]
    duration.labels("anthropic", "messages").observe(0.3)  # type: ignore[attr-defined]
    inflight.labels("openai", "chat").dec()  # type: ignore[attr-defined]
    outcomes.labels("openai", "chat", "completed").inc()  # type: ignore[attr-defined]
    outcomes.labels("openai", "chat", "rate_limited").inc()  # type: ignore[attr-defined]
    outcomes.labels("openai", "chat", "completed").inc()  # type: ignore[attr-defined]
    tokens.labels("openai", "gpt-5", "input").inc(1234)  # type: ignore[attr-defined]
    tokens.labels("openai", "gpt-5", "output").inc(7)  # type: ignore[attr-defined]
    tokens.labels("openai", "gpt-5", "input").inc(0.5)  # type: ignore[attr-defined]
    tokens.labels("openai", 'we"ird\\mo\ndel', "input").inc(1)  # type: ignore[attr-defined]
    passthrough.labels("openai", "GET").inc()  # type: ignore[attr-defined]
    tools = get["injected_tools"]
    tools.labels("openai", "gpt-5", "github", "search").inc()  # type: ignore[attr-defined]


def series_name(line: str) -> str:
    """The metric name a line of the text format is about."""
    if line.startswith("#"):
        return line.split(" ", 3)[2]
    return line.split("{", 1)[0].split(" ", 1)[0]


@pytest.mark.parametrize("created", [True, False])
def test_the_exposition_is_prometheus_clients_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch, created: bool
) -> None:
    # Same clock for both, so the ``_created`` series compare too.
    monkeypatch.setattr(time, "time", lambda: 1_765_000_000.25)
    monkeypatch.setattr("prometheus_client.metrics._use_created", created)
    theirs = CollectorRegistry()
    exercise(reference(theirs))
    ours = GatewayMetrics()
    exercise(vars(ours))
    expected = generate_latest(theirs).decode()
    got = ours.render().decode()
    # Only the series declared above (GatewayMetrics also holds key-ring and breaker ones).
    names = (
        "aibridge_interception",
        "aibridge_passthrough",
        "aibridge_tokens",
        "aibridge_injected_tool_invocations",
    )
    lines = [line for line in got.splitlines() if series_name(line).startswith(names)]
    assert "\n".join(lines) + "\n" == expected
    assert ("_created" in expected) is created
    assert 'le="600.0"' in expected and "aibridge_tokens_total" in expected


def test_a_counter_refuses_a_negative_amount_and_nan_lands_in_no_bucket() -> None:
    counter = LoopCounter("x", "x", ("a",), CollectorRegistry())
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("1").inc(-1)
    metrics = GatewayMetrics()
    child = metrics.duration.labels("p", "chat")
    child.observe(math.nan)
    assert sum(child.counts) == 0


def test_the_recorder_and_key_ring_series_read_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_765_000_000.25)
    theirs = CollectorRegistry()
    enqueued = Counter("aibridge_recorder_records_enqueued", "e", ["kind"], registry=theirs)
    attempts = Histogram(
        "aibridge_key_pool_failover_attempts",
        "a",
        ["provider"],
        buckets=FAILOVER_ATTEMPT_BUCKETS,
        registry=theirs,
    )
    ours = CollectorRegistry()
    our_enqueued = LoopCounter("aibridge_recorder_records_enqueued", "e", ("kind",), ours)
    our_attempts = LoopHistogram(
        "aibridge_key_pool_failover_attempts",
        "a",
        ("provider",),
        ours,
        buckets=FAILOVER_ATTEMPT_BUCKETS,
    )
    for counter, histogram in ((enqueued, attempts), (our_enqueued, our_attempts)):
        counter.labels("token_usage").inc()
        counter.labels("interception_start").inc()
        for n in (1, 1, 2, 5, 7, 30):
            histogram.labels("openai").observe(n)
    assert generate_latest(ours) == generate_latest(theirs)
    assert b'le="25.0"' in generate_latest(ours)
