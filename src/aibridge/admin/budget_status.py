"""What ``GET /api/v1/me`` tells a developer about their budget: which one applies to
the presented key and how much of it is left in the current period.

Two budgets may apply to a request: the user's (its own, or the configured default) and
the presented key's. Both are enforced (the stricter wins), so the one shown is the one
with **less money left** (amount - spent) right now: it is the one that will refuse
first. On a tie the user's is shown. The gateway-wide budget is not shown: what the
whole gateway spent is not a member's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.actor import Actor
from aibridge.governance.periods import period_bounds
from aibridge.governance.prices import PICO_PER_USD, usd_from_pico
from aibridge.limits import Budget, Limits, usd_number
from aibridge.store.spend import spend_pusd

BudgetScope = Literal["user", "key"]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget, what was recorded against it this period, and when the period ends."""

    scope: BudgetScope
    budget: Budget
    spent_pusd: int
    resets_at: datetime

    @property
    def left_pusd(self) -> int:
        """Pico-USD left this period (negative when over: calls in flight may overshoot)."""
        return int(self.budget.amount_usd * PICO_PER_USD) - self.spent_pusd

    def to_json(self, soft_fraction: float) -> dict[str, Any]:
        """The ``"budget"`` object of ``/api/v1/me``: ``soft_exceeded`` once the spend
        passed ``soft_fraction`` of the amount (the warning threshold), ``exceeded`` once
        it reached the amount (new requests are refused until ``resets_at``)."""
        amount = int(self.budget.amount_usd * PICO_PER_USD)
        return {
            **self.budget.to_json(),
            "spent_usd": _usd(self.spent_pusd),
            "remaining_usd": _usd(max(0, self.left_pusd)),
            "resets_at": self.resets_at.isoformat().replace("+00:00", "Z"),
            "scope": self.scope,
            "soft_exceeded": self.spent_pusd >= amount * soft_fraction,
            "exceeded": self.spent_pusd >= amount,
        }


def _usd(pusd: int) -> int | float:
    return usd_number(usd_from_pico(pusd))


async def budget_status(
    session: AsyncSession, actor: Actor, default: Limits, tz: ZoneInfo, now: datetime
) -> BudgetStatus | None:
    """The budget that applies to ``actor`` with less left at ``now``, or None when
    neither the user (own or ``default``) nor the key has one. One spend query per
    budget that applies."""
    wanted: list[tuple[BudgetScope, Budget]] = []
    user_budget = actor.user_limits.inherit(default).budget
    if user_budget is not None:
        wanted.append(("user", user_budget))
    if actor.key_limits.budget is not None:
        wanted.append(("key", actor.key_limits.budget))
    found: list[BudgetStatus] = []
    for scope, budget in wanted:
        start, end = period_bounds(budget.period, now, tz)
        if scope == "user":
            spent = await spend_pusd(session, start, end, user_id=actor.user_id)
        else:
            spent = await spend_pusd(session, start, end, key_id=actor.key_id)
        found.append(BudgetStatus(scope, budget, spent, end))
    # min keeps the first of equals: the user's budget on a tie.
    return min(found, key=lambda s: s.left_pusd) if found else None
