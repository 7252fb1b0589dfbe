"""Key ring: primary-with-fallback selection, cooldowns, exhaustion, the walker, metrics."""

from __future__ import annotations

import logging
from datetime import timedelta
from email.utils import format_datetime

import pytest
from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.providers.keyring import (
    MSG_UNAUTHORIZED,
    KeyRing,
    KeyRingMetrics,
    KeyRingStateCollector,
    KeysExhausted,
    format_duration,
    parse_retry_after,
)
from aibridge.secrets_mask import mask_secret

SECRETS = {
    "a": "sk-aaaaaaaaaaaaaaaaaaaa-key-A-0001",
    "b": "sk-bbbbbbbbbbbbbbbbbbbb-key-B-0002",
    "c": "sk-cccccccccccccccccccc-key-C-0003",
}


def make_pool(
    clock: FakeClock, ids: str = "abc", **kwargs: object
) -> tuple[KeyRing, CollectorRegistry]:
    registry = CollectorRegistry()
    pool = KeyRing(
        [(i, SECRETS[i]) for i in ids],
        provider="openai",
        clock=clock,
        metrics=KeyRingMetrics(registry),
        **kwargs,  # type: ignore[arg-type]
    )
    return pool, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def transitions(registry: CollectorRegistry, reason: str) -> float:
    """How many keys of the "openai" pool went temporary for ``reason``."""
    return sample(
        registry, "aibridge_key_pool_state_transitions_total", provider="openai", reason=reason
    )


def exhaustions(registry: CollectorRegistry, outcome: str) -> float:
    """How often the "openai" pool ran out of keys with ``outcome``."""
    return sample(
        registry, "aibridge_key_pool_exhaustions_total", provider="openai", outcome=outcome
    )


def pool_state(registry: CollectorRegistry, state: str) -> float | None:
    """The "openai" pool's key-state gauge for ``state`` (None when the series is absent)."""
    return registry.get_sample_value(
        "aibridge_key_pool_state", {"provider": "openai", "state": state}
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- construction and selection ---------------------------------------------------------------


def test_rejects_duplicate_and_empty_secrets(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        KeyRing([("a", "s1"), ("b", "s1")], clock=clock)
    with pytest.raises(ValueError, match="duplicate key"):
        KeyRing([("a", "s1"), ("a", "s2")], clock=clock)
    with pytest.raises(ValueError, match="empty key"):
        KeyRing([("a", "")], clock=clock)


def test_empty_pool_is_allowed_but_never_yields_a_key(clock: FakeClock) -> None:
    pool = KeyRing([], provider="byok-only", clock=clock)
    assert pool.has_keys is False
    with pytest.raises(KeysExhausted) as info:
        pool.acquire()
    assert str(info.value) == "no keys provided"
    assert info.value.status == 502
    assert KeyRing([("a", "s1")], clock=clock).has_keys is True


def test_the_primary_key_is_picked_while_it_is_healthy(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    picked = [pool.acquire().key_id for _ in range(5)]
    assert picked == ["a"] * 5
    assert [k.key_id for k in pool.keys] == ["a", "b", "c"]


def test_429_fails_over_and_primary_returns_after_default_cooldown(clock: FakeClock) -> None:
    pool, registry = make_pool(clock)
    a = pool.acquire()
    assert pool.mark_failed(a, 429, None) is True
    assert pool.acquire().key_id == "b"
    clock.advance(59.9)
    assert pool.acquire().key_id == "b"
    assert pool.cooldown_remaining(a) == pytest.approx(0.1)
    clock.advance(0.1)
    assert pool.acquire().key_id == "a"
    assert transitions(registry, "rate_limited") == 1


def test_retry_after_seconds_is_honoured(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    a = pool.keys[0]
    pool.mark_failed(a, 429, 5.0)
    clock.advance(4.9)
    assert pool.acquire().key_id == "b"
    clock.advance(0.1)
    assert pool.acquire().key_id == "a"


def test_retry_after_http_date_is_honoured(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    when = clock.now() + timedelta(seconds=120)
    headers = {"Retry-After": format_datetime(when, usegmt=True)}
    retry_after = parse_retry_after(headers, clock.now())
    assert retry_after == pytest.approx(120.0)
    pool.mark_failed(pool.keys[0], 429, retry_after)
    clock.advance(119)
    assert pool.acquire().key_id == "b"
    clock.advance(1)
    assert pool.acquire().key_id == "a"


def test_walker_parses_response_headers_with_the_pool_clock(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    walker = pool.walker()
    a = walker.next_key()
    when = format_datetime(clock.now() + timedelta(seconds=45), usegmt=True)
    assert walker.mark_failed(a, 429, {"Retry-After": when}) is True
    assert pool.cooldown_remaining(a) == pytest.approx(45.0)
    b = walker.next_key()
    assert walker.report(b, 429, {"retry-after-ms": "2500"}) is True
    assert pool.cooldown_remaining(b) == pytest.approx(2.5)
    c = walker.next_key()
    assert walker.report(c, 200, {}) is False
    assert c.key_id == "c"


def test_zero_default_cooldown_still_fails_over_within_the_call(clock: FakeClock) -> None:
    pool, registry = make_pool(clock, cooldown=0.0)
    walker = pool.walker()
    a = walker.next_key()
    assert walker.report(a, 401) is True  # still a key failure: move on in this call
    assert walker.next_key().key_id == "b"
    assert pool.acquire().key_id == "a"  # but no cooldown for later calls
    assert transitions(registry, "unauthorized") == 0


def test_retry_after_is_read_from_seconds_dates_and_milliseconds_and_junk_ignored(
    clock: FakeClock,
) -> None:
    now = clock.now()
    assert parse_retry_after({"retry-after": "7"}, now) == 7.0
    assert parse_retry_after({"RETRY-AFTER": " 2.5 "}, now) == 2.5
    # OpenAI's millisecond header wins over the coarser seconds one.
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}, now) == 1.5
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}, now) is None
    assert parse_retry_after({"Retry-After": "-3"}, now) is None
    assert parse_retry_after({}, now) is None


def test_retry_after_is_clamped(clock: FakeClock) -> None:
    pool, _ = make_pool(clock, max_cooldown=3600.0)
    a, b = pool.keys[0], pool.keys[1]
    pool.mark_failed(a, 429, 10 * 86400.0)
    assert pool.cooldown_remaining(a) == 3600.0
    # Retry-After: 0 still cools briefly so a burst does not hammer a limited key.
    pool.mark_failed(b, 429, 0.0)
    assert pool.cooldown_remaining(b) == 1.0


def test_shorter_cooldown_never_shortens_a_longer_one(clock: FakeClock) -> None:
    pool, registry = make_pool(clock)
    a = pool.keys[0]
    pool.mark_failed(a, 429, 300.0)
    pool.mark_failed(a, 429, 5.0)
    assert pool.cooldown_remaining(a) == 300.0
    # Only the valid→temporary transition counts.
    assert transitions(registry, "rate_limited") == 1


def test_401_marks_key_unauthorized_for_default_cooldown(clock: FakeClock) -> None:
    pool, registry = make_pool(clock)
    a = pool.keys[0]
    assert pool.mark_failed(a, 401, 999.0) is True  # Retry-After is irrelevant for auth
    assert not pool.is_usable(a)
    assert pool.cooldown_remaining(a) == 60.0
    assert pool.acquire().key_id == "b"
    assert transitions(registry, "unauthorized") == 1


def test_other_statuses_do_not_mark(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    a = pool.keys[0]
    for status in (200, 400, 403, 404, 500, 502, 503, 529):
        assert pool.mark_failed(a, status, 10.0) is False
    assert pool.is_usable(a)
    assert pool.state_counts() == {"valid": 3, "temporary": 0}


def test_403_can_be_configured_as_auth_failure(clock: FakeClock) -> None:
    pool, _ = make_pool(clock, auth_failure_statuses={401, 403})
    assert pool.mark_failed(pool.keys[0], 403, None) is True
    assert pool.acquire().key_id == "b"


def test_mark_ok_does_not_cancel_an_active_cooldown(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    a = pool.keys[0]
    pool.mark_failed(a, 429, 30.0)
    pool.mark_ok(a)
    assert not pool.is_usable(a)
    clock.advance(30)
    pool.mark_ok(a)
    assert pool.is_usable(a)


def test_key_from_another_pool_is_rejected(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    other, _ = make_pool(clock)
    with pytest.raises(ValueError, match="does not belong"):
        pool.mark_failed(other.keys[0], 429, None)


# --- exhaustion -----------------------------------------------------------------------------


def test_all_rate_limited_reports_soonest_retry(clock: FakeClock) -> None:
    pool, registry = make_pool(clock, ids="ab")
    a, b = pool.keys
    pool.mark_failed(a, 429, 90.0)
    pool.mark_failed(b, 429, 30.0)
    clock.advance(0.5)
    with pytest.raises(KeysExhausted) as info:
        pool.acquire()
    err = info.value
    assert err.kind == "rate_limited"
    assert err.retry_after == pytest.approx(29.5)
    assert str(err) == "all configured keys are rate-limited (retry after 30s)"
    assert err.status == 429
    assert err.retry_after_seconds == 30
    assert exhaustions(registry, "rate_limited") == 1


def test_all_unauthorized_is_a_502_with_the_reference_message(clock: FakeClock) -> None:
    pool, registry = make_pool(clock, ids="ab")
    for key in pool.keys:
        pool.mark_failed(key, 401, None)
    with pytest.raises(KeysExhausted) as info:
        pool.acquire()
    err = info.value
    assert err.kind == "unauthorized"
    assert err.message == MSG_UNAUTHORIZED
    assert str(err) == "all configured keys failed authentication. Contact your Administrator"
    assert err.status == 502
    assert exhaustions(registry, "auth_failed") == 1


def test_mixed_exhaustion_is_rate_limited_and_names_both_causes(clock: FakeClock) -> None:
    pool, _ = make_pool(clock, ids="ab")
    pool.mark_failed(pool.keys[0], 401, None)
    pool.mark_failed(pool.keys[1], 429, 120.0)
    with pytest.raises(KeysExhausted) as info:
        pool.acquire()
    err = info.value
    assert (err.kind, err.status, err.cause) == ("rate_limited", 429, "rate_limited")
    # Soonest recovery is the 401 key's 60 s cooldown.
    assert err.retry_after == pytest.approx(60.0)
    assert str(err) == (
        "all configured keys are unavailable: 1 failed authentication, 1 rate-limited "
        "(retry after 1m0s)"
    )


def test_auth_failures_that_recovered_at_once_never_say_rate_limited(clock: FakeClock) -> None:
    # key_cooldown_seconds 0: a 401'd key is usable again at once, so the walk ends with the
    # reference's 429 + Retry-After 0 — but the cause is the provider rejecting every key.
    pool, registry = make_pool(clock, ids="ab", cooldown=0.0)
    walker = pool.walker()
    for key in pool.keys:
        assert walker.next_key() is key
        assert walker.report(key, 401) is True
    with pytest.raises(KeysExhausted) as info:
        walker.next_key()
    err = info.value
    assert (err.kind, err.status, err.retry_after) == ("rate_limited", 429, 0.0)
    assert err.cause == "unauthorized"
    assert "rate-limited" not in str(err)
    assert str(err) == (
        "all configured keys are unavailable: 2 failed authentication (retry after 0s)"
    )
    assert exhaustions(registry, "rate_limited") == 1


def test_key_recovering_during_the_walk_gives_retry_after_zero(clock: FakeClock) -> None:
    pool, _ = make_pool(clock, ids="ab")
    a, b = pool.keys
    walker = pool.walker()
    assert walker.next_key() is a
    assert walker.report(a, 429, 5.0) is True
    assert walker.next_key() is b
    clock.advance(5)  # a recovers while b is in flight
    assert walker.report(b, 429, 60.0) is True
    with pytest.raises(KeysExhausted) as info:
        walker.next_key()  # a was already tried in this walk: no second attempt
    assert info.value.kind == "rate_limited"
    assert info.value.retry_after == 0.0
    assert str(info.value) == "all configured keys are rate-limited (retry after 0s)"


def test_durations_are_formatted_as_go_formats_them() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(0.2) == "1s"
    assert format_duration(59) == "59s"
    assert format_duration(90) == "1m30s"
    assert format_duration(3600) == "1h0m0s"


# --- walker -----------------------------------------------------------------------------------
# The failover loop itself (``send_with_failover``) is tested against a real upstream in
# tests/intercept/test_failover.py.


async def test_no_failover_once_bytes_were_relayed(clock: FakeClock) -> None:
    """The streaming pattern: after the first byte the caller stops reporting to the walker."""
    pool, _ = make_pool(clock)
    walker = pool.walker()
    key = walker.next_key()
    assert walker.report(key, 200) is False  # headers OK: start relaying
    # Mid-stream the upstream fails; the caller marks the key but cannot retry.
    assert pool.mark_failed(key, 429, None) is True
    walker.finish()
    assert walker.attempts == 1
    assert pool.acquire().key_id == "b"  # only later requests avoid the key


# --- hints, logs, state collector ------------------------------------------------------------


def test_hints_are_masked_and_secrets_stay_out_of_logs(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    pool, _ = make_pool(clock)
    a = pool.keys[0]
    assert a.hint == mask_secret(SECRETS["a"])
    assert SECRETS["a"] not in a.hint
    assert SECRETS["a"] not in repr(a)
    with caplog.at_level(logging.INFO, logger="aibridge.providers.keyring"):
        pool.mark_failed(a, 429, None)
    records = [r for r in caplog.records if r.getMessage() == "key marked temporary"]
    assert len(records) == 1
    assert records[0].__dict__["api_key_hint"] == a.hint
    assert records[0].__dict__["status"] == 429
    assert all(SECRETS["a"] not in str(r.__dict__) for r in caplog.records)


def test_state_collector_reads_live_pools(clock: FakeClock) -> None:
    pool, _ = make_pool(clock)
    pools = [pool]
    registry = CollectorRegistry()
    registry.register(KeyRingStateCollector(lambda: pools))
    pool.mark_failed(pool.keys[1], 401, None)
    assert pool_state(registry, "temporary") == 1
    assert pool_state(registry, "valid") == 2
    pools.clear()  # a reload removed the provider: its series disappear
    assert pool_state(registry, "valid") is None
