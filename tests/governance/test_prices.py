"""The price table (exact names, ``*`` patterns, longest wins), the exact cost arithmetic,
the shipped defaults, and the cost on the usage records the recorder writes."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest

from aibridge.governance import prices as prices_module
from aibridge.governance.price_reload import price_table
from aibridge.governance.prices import Price, PriceBook, PriceTable
from aibridge.intercept.observations import Observation, TokenUsage
from aibridge.recording.addon import RecordingAddon
from aibridge.recording.records import Record, TokenUsageRecord, record_from_json, record_to_json
from aibridge.store.prices import default_prices
from tests.recording.test_mapping import interception


def price(model: str, micros: int, ptype: str = "openai-compat") -> Price:
    return Price(ptype, model, micros, 2 * micros, micros // 10, micros * 5 // 4, "2025-12-01")


def test_an_exact_name_wins_then_the_longest_pattern_and_types_never_mix() -> None:
    table = PriceTable(
        [
            price("claude-*", 1),
            price("claude-sonnet-4-5*", 2),
            price("claude-sonnet-4-5-20250929", 3),
            price("claude-sonnet-4-5*", 9, ptype="bedrock"),
        ]
    )
    assert len(table) == 4

    def micros(model: str, ptype: str = "openai-compat") -> int | None:
        found = table.lookup(ptype, model)
        return found.input_micros if found is not None else None

    assert micros("claude-sonnet-4-5-20250929") == 3
    assert micros("claude-sonnet-4-5-20990101") == 2
    assert micros("claude-sonnet-4-5") == 2
    assert micros("claude-opus-9") == 1
    assert micros("gpt-5") is None
    assert micros("claude-sonnet-4-5-x", "bedrock") == 9
    assert micros("claude-opus-9", "bedrock") is None
    assert micros("claude-opus-9", "anthropic") is None


def test_a_call_is_priced_by_the_answering_model_then_the_requested_one_or_not_at_all() -> None:
    table = PriceTable([price("a", 1_000_000), price("b", 3)])
    tokens = {"input": 7, "output": 11, "cache_read": 13, "cache_write": 17}
    # b: 7x3 + 11x6 + 13x0 (3 // 10) + 17x3 (15 // 4) pico-USD.
    assert table.cost_pusd("openai-compat", ("b", "a"), **tokens) == 21 + 66 + 0 + 51
    assert table.cost_pusd("openai-compat", (None, "a"), **tokens) == (
        7 * 1_000_000 + 11 * 2_000_000 + 13 * 100_000 + 17 * 1_250_000
    )
    assert table.cost_pusd("openai-compat", ("unknown", "a"), **tokens) == table.cost_pusd(
        "openai-compat", ("a",), **tokens
    )
    assert table.cost_pusd("openai-compat", ("x", None, ""), **tokens) is None
    assert table.cost_pusd("anthropic", ("a",), **tokens) is None


def test_the_shipped_defaults_follow_each_providers_cache_rules() -> None:
    prices = default_prices()
    keys = [(p.provider_type, p.model) for p in prices]
    assert len(keys) == len(set(keys))
    assert {p.provider_type for p in prices} == {"anthropic", "openai"}
    for p in prices:
        assert p.effective_date == "2025-12-01"
        if p.provider_type == "anthropic" and p.model != "claude-3-haiku*":
            # 5-minute cache writes cost 1.25x input, cache reads 0.1x input (Claude 3
            # Haiku is the published exception: 0.30 and 0.03 on 0.25).
            assert p.cache_write_micros * 4 == p.input_micros * 5, p
            assert p.cache_read_micros * 10 == p.input_micros, p
        elif p.provider_type == "openai":
            # OpenAI bills no cache-write premium; cached input is cheaper than input.
            assert p.cache_write_micros == p.input_micros, p
            assert p.cache_read_micros < p.input_micros, p
    table = price_table(prices)
    for ptype, model in [
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("anthropic", "claude-opus-4-5-20251101"),
        ("anthropic", "claude-haiku-4-5-20251001"),
        ("anthropic", "claude-3-5-haiku-20241022"),
        ("anthropic", "claude-opus-4-1-20250805"),
        ("anthropic", "claude-sonnet-4-20250514"),
        ("openai", "gpt-5-2025-08-07"),
        ("openai", "gpt-5-mini-2025-08-07"),
        ("openai", "gpt-5-nano"),
        ("openai", "gpt-5-codex"),
        ("openai", "gpt-4.1-mini-2025-04-14"),
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "o3-2025-04-16"),
        ("openai", "o4-mini"),
    ]:
        assert table.lookup(ptype, model) is not None, model
    # Patterns cover dated snapshots only, so a new sibling is unpriced, never mispriced.
    for model in ("gpt-5-pro", "gpt-4o-2024-05-13", "claude-opus-4-6", "o3-pro"):
        assert (
            table.lookup("openai" if not model.startswith("claude") else "anthropic", model) is None
        )
    sonnet = table.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    assert Decimal(sonnet.input_micros).scaleb(-6) == Decimal(3)
    mini = table.lookup("openai", "gpt-5-mini")
    assert mini is not None and Decimal(mini.cache_read_micros).scaleb(-6) == Decimal("0.025")


class Queue:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def record(self, rec: Record) -> None:
        self.records.append(rec)


def test_the_recording_addon_prices_each_call_with_the_live_book_and_the_journal_keeps_it() -> None:
    queue = Queue()
    book = PriceBook()
    addon = RecordingAddon(queue, book)
    ix = interception()  # an openai-compat provider, requested model gpt-test
    obs = Observation(
        usages=[
            TokenUsage("r1", "gpt-test-0001", input=10, output=20, cache_read=30, cache_write=40),
            TokenUsage("r2", None, input=1, output=1, reasoning=1),
        ]
    )
    addon.observed(ix, obs)
    assert [r.cost_pusd for r in queue.records if isinstance(r, TokenUsageRecord)] == [None, None]
    book.replace(PriceTable([price("gpt-test*", 1_000), price("gpt-test", 7)]))
    queue.records.clear()
    addon.observed(ix, obs)
    usages = [r for r in queue.records if isinstance(r, TokenUsageRecord)]
    # r1 by the answering model's pattern; r2 names none, so the requested model's price.
    # Reasoning is part of output and is not charged again.
    assert [u.cost_pusd for u in usages] == [
        10 * 1_000 + 20 * 2_000 + 30 * 100 + 40 * 1_250,
        1 * 7 + 1 * 14,
    ]
    for usage in usages:
        assert record_from_json(record_to_json(usage)) == usage
    # A journal line written before cost existed loads as unpriced.
    old = re.sub(rb',"cost_pusd":\d+', b"", record_to_json(usages[0]))
    assert b"cost_pusd" not in old
    restored = record_from_json(old)
    assert isinstance(restored, TokenUsageRecord) and restored.cost_pusd is None
    assert restored.id == usages[0].id and isinstance(restored.id, uuid.UUID)


def test_pattern_look_ups_are_remembered_answer_the_same_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prices_module, "MAX_FOUND", 3)
    table = PriceTable(
        [
            Price("openai", "gpt-4.1*", 2, 8, 0, 0, "2025-01-01"),
            Price("openai", "gpt-4.1-mini*", 1, 4, 0, 0, "2025-01-01"),
        ]
    )
    for _ in range(2):  # the second round is answered from memory, identically
        mini = table.lookup("openai", "gpt-4.1-mini-2025-04-14")
        assert mini is not None and mini.input_micros == 1
        big = table.lookup("openai", "gpt-4.1-2025-04-14")
        assert big is not None and big.input_micros == 2
        assert table.lookup("openai", "o3") is None
        assert table.lookup("anthropic", "gpt-4.1-mini") is None
    # Never more than MAX_FOUND remembered, whatever the names clients send.
    for n in range(10):
        assert table.lookup("openai", f"unknown-{n}") is None
        assert len(table._found) <= 3
