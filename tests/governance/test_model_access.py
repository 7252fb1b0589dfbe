from __future__ import annotations

import pytest

from aibridge.governance.estimate import Estimate, estimate_cost_pusd, estimate_tokens
from aibridge.governance.model_access import model_allowed

from .helpers import PRICES


@pytest.mark.parametrize(
    ("patterns", "provider", "model", "allowed"),
    [
        (None, "openai", "anything", True),
        (("claude-*",), "anthropic", "claude-sonnet-4", True),
        (("claude-*",), "openai", "claude-sonnet-4", True),
        (("claude-*",), "anthropic", "Claude-sonnet-4", False),
        (("gpt-?",), "openai", "gpt-5", True),
        (("gpt-?",), "openai", "gpt-50", False),
        (("openai/gpt-5*",), "openai", "gpt-5-mini", True),
        (("openai/gpt-5*",), "azure", "gpt-5-mini", False),
        # OpenRouter: the model itself is named provider/model.
        (("openai/gpt-5*",), "openrouter", "openai/gpt-5-mini", True),
        (("anthropic/*",), "openrouter", "openai/gpt-5", False),
        # Only * and ? are special: brackets are literal.
        (("gpt-[5]",), "openai", "gpt-5", False),
        (("gpt-[5]",), "openai", "gpt-[5]", True),
        (("a", "b*"), "x", "bee", True),
        ((), "openai", "gpt-5", False),
        (("*",), "openai", "", False),
    ],
)
def test_model_patterns(
    patterns: tuple[str, ...] | None, provider: str, model: str, allowed: bool
) -> None:
    assert model_allowed(patterns, provider, model) is allowed


def test_estimate_caps_output_by_the_default() -> None:
    assert estimate_tokens(401, 100, 4096) == Estimate(101, 100)
    assert estimate_tokens(0, None, 4096) == Estimate(0, 4096)
    assert estimate_tokens(8, 1_000_000, 4096) == Estimate(2, 4096)
    assert estimate_tokens(8, 1_000_000, 4096).tokens == 4098


def test_estimate_cost() -> None:
    estimate = Estimate(100, 10)
    assert estimate_cost_pusd(PRICES, "openai", "gpt-5", estimate) == 100 * 10**6 + 10 * 2 * 10**6
    assert estimate_cost_pusd(PRICES, "openai", "unpriced", estimate) == 0
    assert estimate_cost_pusd(PRICES, "openai", "", estimate) == 0
