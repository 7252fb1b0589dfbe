"""The limits value: parsing an admin's input (every error message), the stored JSON,
PATCH semantics, inheritance of the configured defaults, budgets as text."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from aibridge.inputcheck import InputError
from aibridge.limits import (
    MAX_PATTERNS,
    NO_LIMITS,
    Budget,
    Limits,
    limits_diff,
    limits_from_json,
    parse_budget_text,
    parse_limits,
    parse_usd,
    patch_limits,
    stored_limits,
    usd_number,
)

FULL = Limits(
    requests_per_minute=60,
    tokens_per_minute=100_000,
    max_concurrent=4,
    allowed_models=("claude-*", "openai/gpt-5*"),
    budget=Budget(Decimal("12.5"), "month"),
)


def errors_of(value: Any) -> dict[str, str]:
    with pytest.raises(InputError) as caught:
        parse_limits(value)
    assert caught.value.message == "Invalid limits."
    return {e.field: e.detail for e in caught.value.errors}


def test_none_and_an_empty_object_are_no_limits() -> None:
    assert parse_limits(None) == NO_LIMITS
    assert parse_limits({}) == NO_LIMITS
    assert NO_LIMITS.empty
    assert not Limits(max_concurrent=1).empty


def test_a_full_object_round_trips_through_its_json() -> None:
    as_json = FULL.to_json()
    assert as_json == {
        "requests_per_minute": 60,
        "tokens_per_minute": 100_000,
        "max_concurrent": 4,
        "allowed_models": ["claude-*", "openai/gpt-5*"],
        "budget": {"amount_usd": 12.5, "period": "month"},
    }
    assert parse_limits(as_json) == FULL
    assert limits_from_json(as_json) == FULL
    assert NO_LIMITS.to_json() == dict.fromkeys(as_json)


def test_patterns_are_stripped_and_deduplicated() -> None:
    limits = parse_limits({"allowed_models": [" claude-* ", "claude-*", "gpt-?"]})
    assert limits.allowed_models == ("claude-*", "gpt-?")
    assert parse_limits({"allowed_models": []}).allowed_models == ()


@pytest.mark.parametrize(
    ("value", "field", "detail"),
    [
        ([], "limits", "must be an object with requests_per_minute, tokens_per_minute, "),
        ({"rpm": 1}, "limits.rpm", "is not a limit; known: requests_per_minute, "),
        ({"requests_per_minute": 0}, "limits.requests_per_minute", "must be between 1 and "),
        ({"requests_per_minute": 1.5}, "limits.requests_per_minute", "must be a whole number"),
        ({"requests_per_minute": True}, "limits.requests_per_minute", "must be a whole number"),
        ({"tokens_per_minute": 10**16}, "limits.tokens_per_minute", "must be between 1 and "),
        ({"max_concurrent": "4"}, "limits.max_concurrent", "must be a whole number or null"),
        ({"allowed_models": "claude-*"}, "limits.allowed_models", "must be a list of model"),
        (
            {"allowed_models": ["x"] * (MAX_PATTERNS + 1)},
            "limits.allowed_models",
            f"must hold at most {MAX_PATTERNS} patterns",
        ),
        ({"allowed_models": [""]}, "limits.allowed_models[0]", "must be a non-empty string"),
        ({"allowed_models": [7]}, "limits.allowed_models[0]", "must be a non-empty string"),
        ({"allowed_models": ["a" * 201]}, "limits.allowed_models[0]", "must be at most 200"),
        ({"allowed_models": ["a\tb"]}, "limits.allowed_models[0]", "must be at most 200"),
        ({"allowed_models": ["a b"]}, "limits.allowed_models[0]", "must be MODEL-GLOB or "),
        ({"allowed_models": ["/gpt"]}, "limits.allowed_models[0]", "must be MODEL-GLOB or "),
        ({"allowed_models": ["openai/"]}, "limits.allowed_models[0]", "must be MODEL-GLOB or "),
        ({"budget": 50}, "limits.budget", 'must be an object {"amount_usd": 50, '),
        ({"budget": {"amount_usd": 1, "period": "year"}}, "limits.budget.period", "must be one"),
        ({"budget": {"amount_usd": 1}}, "limits.budget.period", "must be one of day, week, month"),
        ({"budget": {"period": "day"}}, "limits.budget.amount_usd", "must be a number of US "),
        (
            {"budget": {"amount_usd": 1, "period": "day", "cap": 2}},
            "limits.budget.cap",
            "is not a budget field",
        ),
        ({"budget": {"amount_usd": -1, "period": "day"}}, "limits.budget.amount_usd", "must be a "),
        (
            {"budget": {"amount_usd": "NaN", "period": "day"}},
            "limits.budget.amount_usd",
            "must be a finite amount of at least 0",
        ),
        (
            {"budget": {"amount_usd": "1.0000001", "period": "day"}},
            "limits.budget.amount_usd",
            "must have at most 6 decimal places",
        ),
        (
            {"budget": {"amount_usd": 10**10, "period": "day"}},
            "limits.budget.amount_usd",
            "must be at most 1000000000",
        ),
        (
            {"budget": {"amount_usd": "lots", "period": "day"}},
            "limits.budget.amount_usd",
            "must be a number of US dollars, e.g. 50 or 12.5",
        ),
    ],
)
def test_each_bad_field_is_named_with_what_to_send(value: Any, field: str, detail: str) -> None:
    errors = errors_of(value)
    assert list(errors) == [field]
    assert errors[field].startswith(detail), errors[field]


def test_every_bad_field_is_reported_at_once() -> None:
    errors = errors_of(
        {
            "requests_per_minute": -1,
            "tokens_per_minute": "x",
            "max_concurrent": 0,
            "allowed_models": ["ok-*", " "],
            "budget": {"amount_usd": -2, "period": "hour"},
            "extra": 1,
        }
    )
    assert set(errors) == {
        "limits.extra",
        "limits.requests_per_minute",
        "limits.tokens_per_minute",
        "limits.max_concurrent",
        "limits.allowed_models[1]",
        "limits.budget.amount_usd",
        "limits.budget.period",
    }
    with pytest.raises(InputError) as caught:
        parse_limits({"requests_per_minute": 0})
    assert str(caught.value).startswith("Invalid limits. limits.requests_per_minute: ")


def test_the_field_prefix_can_be_chosen() -> None:
    with pytest.raises(InputError) as caught:
        parse_limits({"max_concurrent": 0}, field="body.limits")
    assert [e.field for e in caught.value.errors] == ["body.limits.max_concurrent"]


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        (0, Decimal(0)),
        ("12.50", Decimal("12.5")),
        (0.1, Decimal("0.1")),
        (" 3 ", Decimal(3)),
        ("0.000001", Decimal("0.000001")),
        ("1E+2", Decimal(100)),
    ],
)
def test_usd_amounts_are_exact_decimals(value: Any, amount: Decimal) -> None:
    parsed = parse_usd(value, "x")
    assert parsed == amount
    assert isinstance(parsed, Decimal)
    # Plain notation (no "1E+2"), no trailing zeros: what a person wrote, as they'd write it.
    assert str(parsed) == format(amount.normalize(), "f")


def test_usd_numbers_are_ints_when_whole_and_floats_that_round_trip_otherwise() -> None:
    assert usd_number(Decimal(50)) == 50
    assert isinstance(usd_number(Decimal(50)), int)
    assert usd_number(Decimal("0.000001")) == 0.000001
    assert str(Budget(Decimal("2.5"), "day")) == "2.5/day"


def test_a_patch_sets_present_fields_keeps_absent_ones_and_null_clears() -> None:
    assert patch_limits(FULL, {"max_concurrent": 8}) == Limits(
        requests_per_minute=60,
        tokens_per_minute=100_000,
        max_concurrent=8,
        allowed_models=("claude-*", "openai/gpt-5*"),
        budget=Budget(Decimal("12.5"), "month"),
    )
    cleared = patch_limits(FULL, {"budget": None, "allowed_models": None})
    assert cleared.budget is None
    assert cleared.allowed_models is None
    assert cleared.requests_per_minute == 60
    assert patch_limits(FULL, {}) == FULL
    assert patch_limits(FULL, None) == NO_LIMITS
    with pytest.raises(InputError):
        patch_limits(FULL, {"budget": {"amount_usd": 1, "period": "year"}})
    with pytest.raises(InputError):
        patch_limits(FULL, "none")


def test_the_diff_lists_only_changed_fields_as_json() -> None:
    new = patch_limits(FULL, {"max_concurrent": 8, "budget": None, "requests_per_minute": 60})
    assert limits_diff(FULL, new) == {
        "max_concurrent": {"old": 4, "new": 8},
        "budget": {"old": {"amount_usd": 12.5, "period": "month"}, "new": None},
    }
    assert limits_diff(FULL, FULL) == {}


def test_nothing_set_is_stored_as_null() -> None:
    assert stored_limits(NO_LIMITS) is None
    assert stored_limits(FULL) == FULL.to_json()


def test_unset_fields_inherit_the_defaults_and_set_ones_win() -> None:
    defaults = Limits(requests_per_minute=10, allowed_models=("gpt-*",), budget=FULL.budget)
    mine = Limits(requests_per_minute=500, max_concurrent=2)
    assert mine.inherit(defaults) == Limits(
        requests_per_minute=500,
        max_concurrent=2,
        allowed_models=("gpt-*",),
        budget=FULL.budget,
    )
    assert mine.inherit(NO_LIMITS) is mine
    assert NO_LIMITS.inherit(defaults) == defaults
    # An empty pattern list is set (nothing allowed), so it does not inherit.
    assert Limits(allowed_models=()).inherit(defaults).allowed_models == ()


def test_stored_limits_that_no_longer_validate_are_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert limits_from_json(None) == NO_LIMITS
    assert limits_from_json({}) == NO_LIMITS
    with caplog.at_level(logging.ERROR, logger="aibridge.limits"):
        assert limits_from_json({"requests_per_minute": 0}) == NO_LIMITS
    assert "stored limits are no longer valid" in caplog.text


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("50/month", Budget(Decimal(50), "month")),
        (" 2.5 / day ", Budget(Decimal("2.5"), "day")),
        ("0/week", Budget(Decimal(0), "week")),
    ],
)
def test_budget_text(text: str, budget: Budget) -> None:
    assert parse_budget_text(text) == budget


@pytest.mark.parametrize(
    ("text", "field", "detail"),
    [
        ("50", "budget", 'must be AMOUNT/PERIOD, e.g. "50/month" or "2.5/day"'),
        ("50/year", "budget.period", "must be one of day, week, month"),
        ("x/day", "budget.amount_usd", "must be a number of US dollars, e.g. 50 or 12.5"),
        ("-1/day", "budget.amount_usd", "must be a finite amount of at least 0"),
    ],
)
def test_bad_budget_text_says_what_to_write(text: str, field: str, detail: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_budget_text(text)
    assert caught.value.message == "Invalid budget."
    assert [(e.field, e.detail) for e in caught.value.errors] == [(field, detail)]
