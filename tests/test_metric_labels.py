"""Bounded metric label values."""

from __future__ import annotations

import pytest

from aibridge.metric_labels import MAX_LABEL_LENGTH, OTHER, BoundedLabel, method_label


def test_first_values_keep_their_names_and_later_ones_are_other() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "b", "d")] == ["a", "b", OTHER, "a", "b", OTHER]


def test_overlong_values_are_other_and_take_no_slot() -> None:
    label = BoundedLabel(1)
    assert label("x" * (MAX_LABEL_LENGTH + 1)) == OTHER
    assert label("x" * MAX_LABEL_LENGTH) == "x" * MAX_LABEL_LENGTH


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedLabel(0)


def test_only_standard_methods_are_their_own_label() -> None:
    assert [method_label(m) for m in ("GET", "POST", "DELETE", "PROPFIND", "get", "X" * 500)] == [
        "GET",
        "POST",
        "DELETE",
        OTHER,
        OTHER,
        OTHER,
    ]
