"""Calendar budget periods: day, ISO week from Monday, month; in UTC and in a zone with
daylight saving time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aibridge.governance.periods import period_bounds, time_zone
from aibridge.limits import BudgetPeriod

UTC_ZONE = time_zone("UTC")
BERLIN = time_zone("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", "2025-03-20T12:34:56", "2025-03-20T00:00:00", "2025-03-21T00:00:00"),
        ("day", "2025-03-20T00:00:00", "2025-03-20T00:00:00", "2025-03-21T00:00:00"),
        ("day", "2025-03-20T23:59:59.999999", "2025-03-20T00:00:00", "2025-03-21T00:00:00"),
        # 2025-03-17 is a Monday.
        ("week", "2025-03-17T00:00:00", "2025-03-17T00:00:00", "2025-03-24T00:00:00"),
        ("week", "2025-03-23T23:59:59", "2025-03-17T00:00:00", "2025-03-24T00:00:00"),
        ("week", "2025-01-01T10:00:00", "2024-12-30T00:00:00", "2025-01-06T00:00:00"),
        ("month", "2025-01-31T23:59:59", "2025-01-01T00:00:00", "2025-02-01T00:00:00"),
        ("month", "2025-02-28T12:00:00", "2025-02-01T00:00:00", "2025-03-01T00:00:00"),
        ("month", "2024-02-29T12:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
        ("month", "2024-12-31T23:59:59", "2024-12-01T00:00:00", "2025-01-01T00:00:00"),
        ("month", "2025-01-01T00:00:00", "2025-01-01T00:00:00", "2025-02-01T00:00:00"),
        ("day", "2024-12-31T23:59:59", "2024-12-31T00:00:00", "2025-01-01T00:00:00"),
    ],
)
def test_utc_periods(period: BudgetPeriod, now: str, start: str, end: str) -> None:
    assert period_bounds(period, utc(now), UTC_ZONE) == (utc(start), utc(end))


def test_the_start_is_inclusive_and_the_end_exclusive() -> None:
    start, end = period_bounds("day", utc("2025-03-20T12:00:00"), UTC_ZONE)
    assert period_bounds("day", start, UTC_ZONE)[0] == start
    assert period_bounds("day", end, UTC_ZONE)[0] == end
    assert period_bounds("day", end - timedelta(microseconds=1), UTC_ZONE)[1] == end


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        # Berlin is UTC+1 in winter and UTC+2 in summer (from 2025-03-30 02:00 local).
        ("day", "2025-03-29T23:30:00", "2025-03-29T23:00:00", "2025-03-30T22:00:00"),
        ("day", "2025-10-26T12:00:00", "2025-10-25T22:00:00", "2025-10-26T23:00:00"),
        ("day", "2025-03-20T23:30:00", "2025-03-20T23:00:00", "2025-03-21T23:00:00"),
        ("week", "2025-03-30T12:00:00", "2025-03-23T23:00:00", "2025-03-30T22:00:00"),
        ("month", "2025-03-31T21:59:59", "2025-02-28T23:00:00", "2025-03-31T22:00:00"),
        ("month", "2025-03-31T22:00:00", "2025-03-31T22:00:00", "2025-04-30T22:00:00"),
        ("month", "2024-12-31T23:00:00", "2024-12-31T23:00:00", "2025-01-31T23:00:00"),
        ("month", "2024-12-31T22:59:59", "2024-11-30T23:00:00", "2024-12-31T23:00:00"),
    ],
)
def test_periods_in_a_zone_with_daylight_saving(
    period: BudgetPeriod, now: str, start: str, end: str
) -> None:
    assert period_bounds(period, utc(now), BERLIN) == (utc(start), utc(end))


def test_a_dst_day_is_23_or_25_hours_long() -> None:
    spring = period_bounds("day", utc("2025-03-30T12:00:00"), BERLIN)
    autumn = period_bounds("day", utc("2025-10-26T12:00:00"), BERLIN)
    assert spring[1] - spring[0] == timedelta(hours=23)
    assert autumn[1] - autumn[0] == timedelta(hours=25)


def test_bounds_are_aware_utc_whatever_the_zone_of_now() -> None:
    now = datetime(2025, 6, 1, 1, 0, tzinfo=BERLIN)  # 2025-05-31T23:00Z
    start, end = period_bounds("month", now, BERLIN)
    assert (start.tzinfo, end.tzinfo) == (UTC, UTC)
    assert (start, end) == (utc("2025-05-31T22:00:00"), utc("2025-06-30T22:00:00"))


def test_consecutive_periods_tile_time_without_gaps() -> None:
    periods: tuple[BudgetPeriod, ...] = ("day", "week", "month")
    for period in periods:
        _start, end = period_bounds(period, utc("2024-12-15T12:00:00"), BERLIN)
        for _ in range(40):
            next_start, next_end = period_bounds(period, end, BERLIN)
            assert next_start == end
            assert next_end > next_start
            end = next_end


def test_time_zones_are_iana_names() -> None:
    assert time_zone("Europe/Berlin").key == "Europe/Berlin"
    for bad in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="use an IANA name such as UTC or Europe/Berlin"):
            time_zone(bad)
