"""Calendar budget periods (day, ISO week from Monday, month) in a configured time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aibridge.limits import BudgetPeriod


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Berlin``); ValueError names the fix."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin"
        ) from exc


def period_bounds(period: BudgetPeriod, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC start (inclusive) and end (exclusive) of the ``period`` containing ``now``.

    Periods are calendar periods of ``tz``: a day starts at local midnight, a week on
    Monday at local midnight, a month on its first day; daylight-saving shifts make a day
    23 or 25 hours long, which is what a person in that zone expects.
    """
    local = now.astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period == "day":
        start, end = midnight, midnight + timedelta(days=1)
    elif period == "week":
        start = midnight - timedelta(days=midnight.weekday())
        end = start + timedelta(days=7)
    else:
        start = midnight.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return (
        start.replace(tzinfo=tz).astimezone(UTC),
        end.replace(tzinfo=tz).astimezone(UTC),
    )
