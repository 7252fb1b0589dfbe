"""Builders shared by the limiter tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from aibridge.actor import Actor
from aibridge.clock import FakeClock
from aibridge.governance.limiter import Demand, Limiter, LimiterConfig, Refusal, Ticket
from aibridge.governance.limitstore import LimitStore
from aibridge.governance.metrics import LimiterMetrics
from aibridge.governance.prices import Price, PriceBook, PriceTable
from aibridge.limits import NO_LIMITS, Budget, Limits

START = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)

PRICES = PriceTable(
    [
        # 1 USD per million input tokens, 2 per million output: 10^6 pico-USD per token.
        Price("openai", "gpt-5", 1_000_000, 2_000_000, 100_000, 1_250_000, "2025-01-01"),
    ]
)


def make_actor(user: Limits = NO_LIMITS, key: Limits = NO_LIMITS, *, name: str = "alice") -> Actor:
    return Actor(
        user_id=uuid.uuid5(uuid.NAMESPACE_DNS, name),
        username=name,
        role="member",
        key_id=f"key-{name}",
        user_limits=user,
        key_limits=key,
    )


def demand(
    actor: Actor,
    *,
    model: str = "gpt-5",
    provider: str = "openai",
    body_bytes: int = 400,
    max_output_tokens: int | None = 100,
    hold_slot: bool = True,
) -> Demand:
    return Demand(actor, provider, "openai", model, body_bytes, max_output_tokens, hold_slot)


def make_limiter(
    clock: FakeClock,
    *,
    store: LimitStore | None = None,
    metrics: LimiterMetrics | None = None,
    replica_id: str | None = None,
    **config: object,
) -> Limiter:
    return Limiter(
        LimiterConfig(**config),  # type: ignore[arg-type]
        prices=PriceBook(PRICES),
        clock=clock,
        store=store,
        metrics=metrics,
        replica_id=replica_id,
    )


def budget(usd: str, period: str = "day") -> Budget:
    return Budget(Decimal(usd), period)  # type: ignore[arg-type]


def ticket(result: Ticket | Refusal) -> Ticket:
    assert isinstance(result, Ticket), f"refused: {result}"
    return result


def refusal(result: Ticket | Refusal) -> Refusal:
    assert isinstance(result, Refusal), "admitted, expected a refusal"
    return result
