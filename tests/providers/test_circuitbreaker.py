"""Circuit breakers: closed/open/half-open cycle, isolation, metrics, bodies (parsing their
settings is tested with the other provider settings, in test_settings.py)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.metric_labels import BoundedLabel
from aibridge.providers.breaker_metrics import CircuitBreakerMetrics
from aibridge.providers.circuitbreaker import (
    ANTHROPIC_FAILURE_STATUSES,
    BreakerKey,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerRegistry,
    CircuitOpen,
    State,
    failure_statuses_for,
)

ENABLED = CircuitBreakerConfig(enabled=True)  # reference defaults: 5 / 10 s / 30 s / 3
LABELS = {"provider": "anthropic", "endpoint": "/v1/messages", "model": "claude-a"}


class Env:
    """A registry on a fake clock with metrics and a transition log."""

    def __init__(
        self, config: CircuitBreakerConfig = ENABLED, model_cap: int = 100, **kwargs: object
    ) -> None:
        self.clock = FakeClock()
        self.prom = CollectorRegistry()
        self.changes: list[tuple[str, State, State]] = []
        self.registry = CircuitBreakerRegistry(
            config,
            provider="anthropic",
            clock=self.clock,
            metrics=CircuitBreakerMetrics(self.prom, BoundedLabel(model_cap)),
            on_state_change=lambda key, old, new: self.changes.append((key.model, old, new)),
            **kwargs,  # type: ignore[arg-type]
        )

    def breaker(self, model: str = "claude-a") -> CircuitBreaker:
        return self.registry.get("/v1/messages", model)

    def metric(self, name: str, model: str = "claude-a") -> float | None:
        return self.prom.get_sample_value(name, {**LABELS, "model": model})


def fail(breaker: CircuitBreaker, times: int, status: int = 503) -> None:
    for _ in range(times):
        breaker.allow().record(status)


def trip(env: Env, model: str = "claude-a") -> CircuitBreaker:
    breaker = env.breaker(model)
    fail(breaker, 5)
    assert breaker.state is State.OPEN
    return breaker


# --- closed → open ------------------------------------------------------------------------------


def test_opens_after_threshold_consecutive_failures() -> None:
    env = Env()
    breaker = env.breaker()
    fail(breaker, 4)
    assert breaker.state is State.CLOSED
    assert env.metric("aibridge_circuit_breaker_state") == 0.0
    fail(breaker, 1)
    assert breaker.state is State.OPEN
    assert env.metric("aibridge_circuit_breaker_state") == 1.0
    assert env.metric("aibridge_circuit_breaker_trips_total") == 1
    assert env.changes == [("claude-a", State.CLOSED, State.OPEN)]


def test_success_resets_the_consecutive_run() -> None:
    env = Env()
    breaker = env.breaker()
    fail(breaker, 4)
    breaker.allow().record(200)
    fail(breaker, 4)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN


def test_failures_outside_the_interval_do_not_accumulate() -> None:
    env = Env()
    breaker = env.breaker()
    fail(breaker, 4)
    env.clock.advance(10)  # interval elapsed: counts reset
    fail(breaker, 4)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN


def test_zero_interval_never_resets_counts() -> None:
    env = Env(CircuitBreakerConfig(enabled=True, interval_seconds=0))
    breaker = env.breaker()
    fail(breaker, 4)
    env.clock.advance(10_000)
    fail(breaker, 1)
    assert breaker.state is State.OPEN


def test_non_failure_statuses_do_not_count() -> None:
    env = Env()
    breaker = env.breaker()
    for status in (200, 400, 401, 404, 429, 500, 502, 529):
        fail(breaker, 10, status)
    assert breaker.state is State.CLOSED
    assert env.changes == []
    fail(breaker, 5, 504)
    assert breaker.state is State.OPEN


def test_529_counts_for_anthropic() -> None:
    assert failure_statuses_for("anthropic") == ANTHROPIC_FAILURE_STATUSES
    assert 529 not in failure_statuses_for("openai")
    env = Env(failure_statuses=failure_statuses_for("anthropic"))
    breaker = env.breaker()
    fail(breaker, 5, 529)
    assert breaker.state is State.OPEN


def test_exceptions_transport_failures_count_others_do_not() -> None:
    env = Env()
    breaker = env.breaker()
    for _ in range(10):
        breaker.allow().record(ValueError("bug in the gateway, not an upstream outage"))
    assert breaker.state is State.CLOSED
    for exc in (ConnectionRefusedError(), TimeoutError(), ConnectionResetError()):
        breaker.allow().record(exc)
    fail(breaker, 1)
    assert breaker.state is State.CLOSED
    breaker.allow().record(TimeoutError())
    assert breaker.state is State.OPEN


# --- open ---------------------------------------------------------------------------------------


def test_rejects_while_open_with_retry_after() -> None:
    env = Env()
    breaker = trip(env)
    with pytest.raises(CircuitOpen) as info:
        breaker.allow()
    assert info.value.retry_after == 30
    assert info.value.status == 503
    env.clock.advance(10.5)
    with pytest.raises(CircuitOpen) as info:
        breaker.allow()
    assert info.value.retry_after == 20  # time left until half-open, rounded up
    assert info.value.key == BreakerKey("anthropic", "/v1/messages", "claude-a")
    assert env.metric("aibridge_circuit_breaker_rejects_total") == 2


# --- half-open ----------------------------------------------------------------------------------


def test_half_open_lets_max_requests_probes_through_and_successes_close() -> None:
    env = Env()
    breaker = trip(env)
    env.clock.advance(29.9)
    assert breaker.state is State.OPEN
    env.clock.advance(0.1)
    assert breaker.state is State.HALF_OPEN
    assert env.metric("aibridge_circuit_breaker_state") == 0.5
    probes = [breaker.allow() for _ in range(3)]
    with pytest.raises(CircuitOpen):
        breaker.allow()  # a fourth concurrent request exceeds max_requests
    assert env.metric("aibridge_circuit_breaker_rejects_total") == 1
    probes[0].record(200)
    probes[1].record(200)
    assert breaker.state is State.HALF_OPEN
    probes[2].record(200)
    assert breaker.state is State.CLOSED
    assert env.metric("aibridge_circuit_breaker_state") == 0.0
    assert env.changes == [
        ("claude-a", State.CLOSED, State.OPEN),
        ("claude-a", State.OPEN, State.HALF_OPEN),
        ("claude-a", State.HALF_OPEN, State.CLOSED),
    ]
    breaker.allow().record(200)  # closed again: traffic flows


def test_half_open_failure_reopens() -> None:
    env = Env()
    breaker = trip(env)
    env.clock.advance(30)
    probe = breaker.allow()
    breaker.allow().record(200)
    probe.record(503)
    assert breaker.state is State.OPEN
    assert env.metric("aibridge_circuit_breaker_trips_total") == 2
    with pytest.raises(CircuitOpen) as info:
        breaker.allow()
    assert info.value.retry_after == 30  # a fresh open period


def test_cancelled_probe_frees_its_slot() -> None:
    env = Env(CircuitBreakerConfig(enabled=True, max_requests=1))
    breaker = trip(env)
    env.clock.advance(30)
    with breaker.allow():
        pass  # left without an outcome (e.g. nothing to judge): slot freed, not counted
    probe = breaker.allow()
    probe.record(asyncio.CancelledError())  # client went away: neither success nor failure
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(ConnectionResetError), breaker.allow():
        raise ConnectionResetError  # the context manager records the escaping failure
    assert breaker.state is State.OPEN


def test_outcome_of_a_request_admitted_before_a_trip_is_ignored() -> None:
    env = Env(CircuitBreakerConfig(enabled=True, max_requests=1))
    breaker = env.breaker()
    slow = breaker.allow()  # admitted while closed
    fail(breaker, 5)
    env.clock.advance(30)
    assert breaker.state is State.HALF_OPEN
    slow.record(200)  # belongs to the old closed period: must not close the breaker
    assert breaker.state is State.HALF_OPEN
    slow.record(503)  # recording twice is a no-op
    assert breaker.state is State.HALF_OPEN


# --- disabled, isolation, registry ---------------------------------------------------------------


def test_disabled_config_never_opens() -> None:
    env = Env(CircuitBreakerConfig(enabled=False, failure_threshold=1))
    breaker = env.breaker()
    fail(breaker, 100)
    breaker.allow()  # still admitted
    assert breaker.state is State.CLOSED
    assert len(env.registry) == 0
    assert env.changes == []
    assert env.metric("aibridge_circuit_breaker_state") is None


def test_each_model_and_endpoint_has_its_own_breaker() -> None:
    env = Env()
    trip(env, "claude-a")
    other = env.breaker("claude-b")
    other.allow().record(200)
    assert other.state is State.CLOSED
    assert env.registry.get("/v1/messages", "claude-a").state is State.OPEN
    # Same model on another endpoint is a different breaker too.
    assert env.registry.get("/v1/messages/count_tokens", "claude-a").state is (State.CLOSED)
    assert env.metric("aibridge_circuit_breaker_state", "claude-b") == 0.0
    assert env.breaker("claude-a") is env.breaker("claude-a")


def test_registry_is_bounded_and_keeps_open_breakers() -> None:
    env = Env(max_breakers=2)
    trip(env, "m1")
    env.breaker("m2")
    env.breaker("m3")  # evicts the closed m2, not the open m1
    assert len(env.registry) == 2
    assert set(k.model for k in env.registry.snapshot()) == {"m1", "m3"}
    assert env.breaker("m1").state is State.OPEN
    assert env.metric("aibridge_circuit_breaker_state", "m2") is None


def test_reconfigure_resets_breakers() -> None:
    env = Env()
    trip(env)
    env.registry.reconfigure(CircuitBreakerConfig(enabled=True, failure_threshold=1))
    breaker = env.breaker()
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN
    env.registry.reconfigure(None)
    assert env.registry.enabled is False
    fail(env.breaker(), 10)
    env.breaker().allow()


def test_faulty_state_callback_does_not_break_the_breaker() -> None:
    def boom(key: BreakerKey, old: State, new: State) -> None:
        raise RuntimeError("observer bug")

    registry = CircuitBreakerRegistry(ENABLED, clock=FakeClock(), on_state_change=boom)
    breaker = registry.get("/v1/chat/completions", "gpt")
    fail(breaker, 5)
    assert breaker.state is State.OPEN


def test_before_request_then_record_opens_rejects_and_closes_the_breaker() -> None:
    """A caller's style: ``before_request()`` then ``record(status)`` on the breaker."""
    env = Env(CircuitBreakerConfig(enabled=True, failure_threshold=2, max_requests=1))
    breaker = env.breaker()
    for _ in range(2):
        breaker.before_request()
        breaker.record(503)
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpen) as info:
        breaker.before_request()
    assert info.value.retry_after_seconds == 30
    env.clock.advance(30)
    breaker.before_request()
    with pytest.raises(CircuitOpen):
        breaker.before_request()  # the single probe slot is taken
    breaker.record(200)
    assert breaker.state is State.CLOSED


def test_provider_label_defaults_to_the_registry_and_can_be_overridden() -> None:
    env = Env()
    assert env.breaker().key == BreakerKey("anthropic", "/v1/messages", "claude-a")
    other = env.registry.get("/v1/messages", "claude-a", provider="anthropic-eu")
    assert other.key.provider == "anthropic-eu"
    assert other is not env.breaker()


def test_models_past_the_label_cap_share_other_series_without_state() -> None:
    env = Env(max_breakers=2, model_cap=1)
    trip(env, "claude-a")
    trip(env, "claude-b")  # past the cap: counted under "other"
    env.breaker("claude-a")  # now claude-b is the least recently used
    trip(env, "claude-c")  # evicts claude-b (both open: the least recently used goes)
    assert {k.model for k in env.registry.snapshot()} == {"claude-a", "claude-c"}
    assert env.metric("aibridge_circuit_breaker_state", "claude-a") == 1.0
    assert env.metric("aibridge_circuit_breaker_state", "other") is None
    assert env.metric("aibridge_circuit_breaker_trips_total", "claude-b") is None
    # The shared series outlives the evicted breaker that fed it.
    assert env.metric("aibridge_circuit_breaker_trips_total", "other") == 2.0
    with pytest.raises(CircuitOpen):
        env.breaker("claude-c").allow()
    assert env.metric("aibridge_circuit_breaker_rejects_total", "other") == 1.0
