"""What an admin may limit for a user or a gateway key (a value; no database, no HTTP).

A :class:`Limits` is what is stored on a user or a key and what the admin API accepts and
returns as ``"limits"``: every field nullable, ``None`` meaning "no limit of its own" (a
user's ``None`` inherits the configured default; a key's ``None`` leaves the user's limit
alone). Where both a user and its key set a limit, the stricter wins: each has its own
counters and a request must pass both (:mod:`aibridge.governance`).

Amounts of money are :class:`~decimal.Decimal` USD with at most 6 decimal places, so a
budget compares exactly with costs in pico-USD (:mod:`aibridge.governance.prices`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from aibridge.inputcheck import CONTROL_CHARACTERS, FieldError, InputError

log = logging.getLogger(__name__)

BudgetPeriod = Literal["day", "week", "month"]
BUDGET_PERIODS: tuple[BudgetPeriod, ...] = ("day", "week", "month")

MAX_PATTERNS = 64
"""At most this many ``allowed_models`` patterns per user or key."""
MAX_PATTERN_LENGTH = 200
MAX_COUNT = 1_000_000_000
"""Upper bound of ``requests_per_minute`` and ``max_concurrent``."""
MAX_TOKENS_PER_MINUTE = 10**15
MAX_BUDGET_USD = Decimal("1000000000")
USD_PLACES = 6
"""Decimal places accepted in a USD amount (a micro-dollar)."""

PATTERN = re.compile(r"^[^\s/]+(?:/[^\s/]+)*$")
"""An ``allowed_models`` pattern: ``MODEL-GLOB`` or ``PROVIDER-NAME/MODEL-GLOB``, where the
glob may use ``*`` (any run of characters) and ``?`` (one character). Without a provider
it applies on every provider. ``a/b`` also matches a model literally named ``a/b`` on any
provider (OpenRouter's model names contain a slash)."""

LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "allowed_models",
    "budget",
)
"""The keys of the admin API's ``"limits"`` object, in order."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend limit in USD per calendar period (in the configured time zone)."""

    amount_usd: Decimal
    period: BudgetPeriod

    def to_json(self) -> dict[str, Any]:
        """The admin API's ``{"amount_usd", "period"}`` (the amount as a JSON number)."""
        return {"amount_usd": usd_number(self.amount_usd), "period": self.period}

    def __str__(self) -> str:
        return f"{usd_number(self.amount_usd)}/{self.period}"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one user or one key; ``None`` = none of its own."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    allowed_models: tuple[str, ...] | None = None
    budget: Budget | None = None

    @property
    def empty(self) -> bool:
        """True when no field is set."""
        return self == NO_LIMITS

    def to_json(self) -> dict[str, Any]:
        """The admin API's ``"limits"`` object (every key present, unset ones null)."""
        return {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "max_concurrent": self.max_concurrent,
            "allowed_models": list(self.allowed_models)
            if self.allowed_models is not None
            else None,
            "budget": self.budget.to_json() if self.budget is not None else None,
        }

    def inherit(self, default: Limits) -> Limits:
        """These limits with every unset field taken from ``default`` (a user's limits
        over the configured defaults)."""
        if default.empty:
            return self
        return Limits(
            requests_per_minute=_first(self.requests_per_minute, default.requests_per_minute),
            tokens_per_minute=_first(self.tokens_per_minute, default.tokens_per_minute),
            max_concurrent=_first(self.max_concurrent, default.max_concurrent),
            allowed_models=_first(self.allowed_models, default.allowed_models),
            budget=_first(self.budget, default.budget),
        )


NO_LIMITS = Limits()
"""Limits with nothing set."""


def _first(value: Any, fallback: Any) -> Any:
    return value if value is not None else fallback


def usd_number(amount: Decimal) -> int | float:
    """``amount`` as a JSON number: an int when whole, else the float whose shortest
    repr is the decimal (amounts carry at most 6 places, so the float round-trips)."""
    if amount == amount.to_integral_value():
        return int(amount)
    return float(amount)


def parse_usd(value: object, field: str) -> Decimal | FieldError:
    """A non-negative USD amount with at most 6 decimal places, or why not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return FieldError(field, "must be a number of US dollars, e.g. 50 or 12.5")
    try:
        amount = Decimal(str(value)) if not isinstance(value, str) else Decimal(value.strip())
    except InvalidOperation:
        return FieldError(field, "must be a number of US dollars, e.g. 50 or 12.5")
    if not amount.is_finite() or amount < 0:
        return FieldError(field, "must be a finite amount of at least 0")
    if amount > MAX_BUDGET_USD:
        return FieldError(field, f"must be at most {MAX_BUDGET_USD}")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -USD_PLACES:
        return FieldError(field, f"must have at most {USD_PLACES} decimal places")
    return amount.quantize(Decimal(1).scaleb(-USD_PLACES)).normalize() + Decimal(0)


def _count(value: object, field: str, maximum: int, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(field, "must be a whole number or null"))
        return None
    if not 1 <= value <= maximum:
        errors.append(FieldError(field, f"must be between 1 and {maximum}, or null for none"))
        return None
    return value


def _patterns(value: object, field: str, errors: list[FieldError]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        errors.append(FieldError(field, 'must be a list of model patterns, e.g. ["claude-*"]'))
        return None
    if len(value) > MAX_PATTERNS:
        errors.append(FieldError(field, f"must hold at most {MAX_PATTERNS} patterns"))
        return None
    out: list[str] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, str) or not item.strip():
            errors.append(FieldError(where, "must be a non-empty string"))
            continue
        item = item.strip()
        if len(item) > MAX_PATTERN_LENGTH or CONTROL_CHARACTERS.search(item):
            errors.append(
                FieldError(where, f"must be at most {MAX_PATTERN_LENGTH} printable characters")
            )
            continue
        if not PATTERN.match(item):
            errors.append(
                FieldError(
                    where,
                    "must be MODEL-GLOB or PROVIDER/MODEL-GLOB without spaces, "
                    'e.g. "claude-*" or "openai/gpt-5*"',
                )
            )
            continue
        if item not in out:
            out.append(item)
    return tuple(out)


def _budget(value: object, field: str, errors: list[FieldError]) -> Budget | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors.append(
            FieldError(field, 'must be an object {"amount_usd": 50, "period": "month"} or null')
        )
        return None
    unknown = sorted(set(value) - {"amount_usd", "period"})
    for key in unknown:
        errors.append(FieldError(f"{field}.{key}", "is not a budget field"))
    amount = parse_usd(value.get("amount_usd"), f"{field}.amount_usd")
    if isinstance(amount, FieldError):
        errors.append(amount)
    period = value.get("period")
    if period not in BUDGET_PERIODS:
        errors.append(FieldError(f"{field}.period", f"must be one of {', '.join(BUDGET_PERIODS)}"))
    if unknown or isinstance(amount, FieldError) or period not in BUDGET_PERIODS:
        return None
    return Budget(amount, period)


def parse_limits(value: object, field: str = "limits") -> Limits:
    """The :class:`Limits` an admin sent (``None`` clears every limit).

    Raises :class:`~aibridge.inputcheck.InputError` naming every bad field at once.
    """
    if value is None:
        return NO_LIMITS
    if not isinstance(value, Mapping):
        raise InputError(
            "Invalid limits.",
            [FieldError(field, "must be an object with " + ", ".join(LIMIT_FIELDS))],
        )
    errors: list[FieldError] = [
        FieldError(f"{field}.{key}", "is not a limit; known: " + ", ".join(LIMIT_FIELDS))
        for key in sorted(set(value) - set(LIMIT_FIELDS))
    ]
    limits = Limits(
        requests_per_minute=_count(
            value.get("requests_per_minute"), f"{field}.requests_per_minute", MAX_COUNT, errors
        ),
        tokens_per_minute=_count(
            value.get("tokens_per_minute"),
            f"{field}.tokens_per_minute",
            MAX_TOKENS_PER_MINUTE,
            errors,
        ),
        max_concurrent=_count(
            value.get("max_concurrent"), f"{field}.max_concurrent", MAX_COUNT, errors
        ),
        allowed_models=_patterns(value.get("allowed_models"), f"{field}.allowed_models", errors),
        budget=_budget(value.get("budget"), f"{field}.budget", errors),
    )
    if errors:
        raise InputError("Invalid limits.", errors)
    return limits


def patch_limits(current: Limits, value: object, field: str = "limits") -> Limits:
    """``current`` changed by an admin's ``"limits"`` patch (PATCH semantics per field).

    ``None`` clears every limit; in an object, a field present is set (``null`` clears
    it) and a field absent keeps its current value, so ``{"max_concurrent": 4}`` changes
    nothing else. Raises :class:`~aibridge.inputcheck.InputError` like
    :func:`parse_limits`.
    """
    given = parse_limits(value, field)
    if not isinstance(value, Mapping):
        return given  # None: every limit cleared
    kept = {name: getattr(given if name in value else current, name) for name in LIMIT_FIELDS}
    return Limits(**kept)


def limits_diff(old: Limits, new: Limits) -> dict[str, dict[str, Any]]:
    """``{field: {"old", "new"}}`` (JSON values) for every field that differs (for audit
    rows)."""
    before, after = old.to_json(), new.to_json()
    return {
        name: {"old": before[name], "new": after[name]}
        for name in LIMIT_FIELDS
        if before[name] != after[name]
    }


def stored_limits(limits: Limits) -> dict[str, Any] | None:
    """What a ``limits`` column holds for ``limits`` (NULL when nothing is set)."""
    return None if limits.empty else limits.to_json()


def limits_from_json(stored: object) -> Limits:
    """The limits stored in a ``limits`` column (None or JSON written by
    :meth:`Limits.to_json`). Writes are validated, so a value that no longer validates
    means a rule tightened since: it is logged loudly and ignored rather than failing
    every request of that user."""
    if not stored:
        return NO_LIMITS
    try:
        return parse_limits(stored)
    except InputError as exc:
        log.error("stored limits are no longer valid and are ignored; set them again: %s", exc)
        return NO_LIMITS


def parse_budget_text(text: str) -> Budget:
    """``"50/month"`` (the CLI's and the settings' form) as a :class:`Budget`."""
    amount, sep, period = text.strip().partition("/")
    if not sep:
        raise InputError(
            "Invalid budget.",
            [FieldError("budget", 'must be AMOUNT/PERIOD, e.g. "50/month" or "2.5/day"')],
        )
    errors: list[FieldError] = []
    budget = _budget({"amount_usd": amount.strip(), "period": period.strip()}, "budget", errors)
    if budget is None:
        raise InputError("Invalid budget.", errors)
    return budget
