"""The key ring's seam for sharing cooldowns: ``on_cooldown`` and ``apply_cooldown``."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.providers.keyring import (
    RATE_LIMITED,
    UNAUTHORIZED,
    CooldownReason,
    KeyRing,
    KeyRingMetrics,
    KeysExhausted,
    PoolKey,
)

SECRETS = [("a", "sk-aaaaaaaaaaaaaaaaaaaa-key-A-0001"), ("b", "sk-bbbbbbbbbbbbbbbbbbbb-key-B-0002")]
Heard = list[tuple[str, float, CooldownReason]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_ring(clock: FakeClock, heard: Heard | None = None) -> tuple[KeyRing, CollectorRegistry]:
    registry = CollectorRegistry()

    def listener(key: PoolKey, until: float, reason: CooldownReason) -> None:
        assert heard is not None
        heard.append((key.key_id, until, reason))

    ring = KeyRing(
        SECRETS,
        provider="openai",
        clock=clock,
        metrics=KeyRingMetrics(registry),
        on_cooldown=listener if heard is not None else None,
    )
    return ring, registry


def wall(clock: FakeClock) -> float:
    return clock.now().timestamp()


def test_a_cooldown_is_reported_with_its_wall_clock_end_and_reason(clock: FakeClock) -> None:
    heard: Heard = []
    ring, _ = make_ring(clock, heard)
    a, b = ring.keys
    assert ring.mark_failed(a, 429, retry_after=30)
    assert ring.mark_failed(b, 401)
    assert heard == [
        ("a", wall(clock) + 30, RATE_LIMITED),
        ("b", wall(clock) + 60, UNAUTHORIZED),
    ]


def test_only_a_cooldown_that_starts_or_lengthens_is_reported(clock: FakeClock) -> None:
    heard: Heard = []
    ring, _ = make_ring(clock, heard)
    a, _b = ring.keys
    ring.mark_failed(a, 429, retry_after=30)
    ring.mark_failed(a, 429, retry_after=10)  # shorter: kept at 30, nothing to say
    ring.mark_failed(a, 500)  # not a key failure
    clock.advance(1)
    ring.mark_failed(a, 429, retry_after=40)  # lengthens to 41 from the first mark
    assert [(k, until - heard[0][1]) for k, until, _ in heard] == [("a", 0.0), ("a", 11.0)]


def test_a_failing_listener_never_breaks_the_request(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ring, _ = make_ring(clock)

    def broken(key: PoolKey, until: float, reason: CooldownReason) -> None:
        raise RuntimeError("listener bug")

    ring.on_cooldown = broken
    a, b = ring.keys
    with caplog.at_level(logging.ERROR, logger="aibridge.providers.keyring"):
        assert ring.mark_failed(a, 429, retry_after=5)
    assert ring.acquire() is b
    assert "key cooldown listener failed" in caplog.text


def test_an_applied_cooldown_moves_selection_and_ends_on_time(clock: FakeClock) -> None:
    heard: Heard = []
    ring, registry = make_ring(clock, heard)
    a, b = ring.keys
    assert ring.apply_cooldown(a, wall(clock) + 20, RATE_LIMITED)
    assert ring.acquire() is b
    assert ring.cooldown_remaining(a) == pytest.approx(20)
    # Not echoed, and not counted as this replica's transition.
    assert heard == []
    transitions = registry.get_sample_value(
        "aibridge_key_pool_state_transitions_total",
        {"provider": "openai", "reason": "rate_limited"},
    )
    assert transitions is None
    clock.advance(20)
    assert ring.acquire() is a


def test_an_applied_cooldown_never_shortens_a_longer_one(clock: FakeClock) -> None:
    ring, _ = make_ring(clock)
    a, _b = ring.keys
    ring.mark_failed(a, 429, retry_after=60)
    assert not ring.apply_cooldown(a, wall(clock) + 10, RATE_LIMITED)
    assert ring.cooldown_remaining(a) == pytest.approx(60)
    assert ring.apply_cooldown(a, wall(clock) + 90, UNAUTHORIZED)
    assert ring.cooldown_remaining(a) == pytest.approx(90)


def test_an_ended_or_absurd_cooldown_is_ignored_or_capped(clock: FakeClock) -> None:
    ring, _ = make_ring(clock)
    a, _b = ring.keys
    assert not ring.apply_cooldown(a, wall(clock) - 1, RATE_LIMITED)
    assert not ring.apply_cooldown(a, float("nan"), RATE_LIMITED)
    assert ring.is_usable(a)
    assert ring.apply_cooldown(a, wall(clock) + 10 * 86400, RATE_LIMITED)
    assert ring.cooldown_remaining(a) == pytest.approx(3600)


def test_applied_reasons_shape_the_exhaustion(clock: FakeClock) -> None:
    ring, _ = make_ring(clock)
    a, b = ring.keys
    ring.apply_cooldown(a, wall(clock) + 30, UNAUTHORIZED)
    ring.apply_cooldown(b, wall(clock) + 50, UNAUTHORIZED)
    with pytest.raises(KeysExhausted) as info:
        ring.acquire()
    assert (info.value.status, info.value.cause) == (502, UNAUTHORIZED)
    ring.apply_cooldown(b, wall(clock) + 70, RATE_LIMITED)
    with pytest.raises(KeysExhausted) as info:
        ring.acquire()
    assert (info.value.status, info.value.retry_after_seconds) == (429, 30)


def test_a_key_of_another_ring_is_refused(clock: FakeClock) -> None:
    ring, _ = make_ring(clock)
    other, _ = make_ring(clock)
    with pytest.raises(ValueError, match="does not belong"):
        ring.apply_cooldown(other.keys[0], wall(clock) + 5, RATE_LIMITED)
