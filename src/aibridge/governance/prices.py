"""Model prices and the exact cost of a call.

Prices are integers in micro-USD per million tokens, which is the same number as pico-USD
(10^-12 USD) per token, so the cost of any token count is an exact integer number of
pico-USD: no floating point anywhere between the recorded tokens and the budget.

Token counts are the recorder's (:class:`~aibridge.recording.records.TokenUsageRecord`):
``input`` is the *uncached* input (OpenAI's cached tokens already taken out), and cache
reads and writes are charged at their own prices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

PICO_PER_USD = 10**12
MICROS_PER_USD = 10**6


@dataclass(frozen=True, slots=True)
class Price:
    """What one model costs per token, by kind of token (micro-USD per million tokens)."""

    provider_type: str
    model: str
    input_micros: int
    output_micros: int
    cache_read_micros: int
    cache_write_micros: int
    effective_date: str
    """ISO date (``YYYY-MM-DD``) from which the price applies."""

    def cost_pusd(self, *, input: int, output: int, cache_read: int, cache_write: int) -> int:
        """The exact cost in pico-USD of these token counts."""
        return (
            input * self.input_micros
            + output * self.output_micros
            + cache_read * self.cache_read_micros
            + cache_write * self.cache_write_micros
        )


def usd_from_pico(pusd: int) -> Decimal:
    """Pico-USD as an exact :class:`~decimal.Decimal` of USD."""
    return Decimal(pusd).scaleb(-12).normalize() + Decimal(0)


def micros_from_usd(usd: Decimal) -> int:
    """USD per million tokens (at most 6 decimal places) as micro-USD per million tokens."""
    return int(usd.scaleb(6).to_integral_value())


MAX_FOUND = 4096
"""Pattern look-ups a :class:`PriceTable` remembers (then it forgets them all and starts
again: cheaper per call than an LRU's bookkeeping)."""


class PriceTable:
    """An immutable lookup of prices by provider type and model.

    ``lookup`` tries the exact model name first, then patterns ending in ``*`` (the
    longest prefix wins), so one row can price a family of dated snapshots.
    """

    __slots__ = ("_exact", "_found", "_prefixes")

    def __init__(self, prices: Iterable[Price] = ()) -> None:
        self._exact: dict[tuple[str, str], Price] = {}
        # Pattern matches found so far (None: unpriced). Every call is priced up to three
        # times (record, access line, limiter) and dated model names usually miss the
        # exact table, which would walk every pattern each time. Bounded: model names
        # come from clients and upstreams.
        self._found: dict[tuple[str, str], Price | None] = {}
        prefixes: list[tuple[str, str, Price]] = []
        for price in prices:
            if price.model.endswith("*"):
                prefixes.append((price.provider_type, price.model[:-1], price))
            else:
                self._exact[(price.provider_type, price.model)] = price
        prefixes.sort(key=lambda p: len(p[1]), reverse=True)
        self._prefixes = tuple(prefixes)

    def lookup(self, provider_type: str, model: str) -> Price | None:
        """The price of ``model`` on providers of ``provider_type``, or None (unpriced)."""
        key = (provider_type, model)
        price = self._exact.get(key)
        if price is not None:
            return price
        found = self._found
        try:
            return found[key]
        except KeyError:
            pass
        price = None
        for ptype, prefix, candidate in self._prefixes:
            if ptype == provider_type and model.startswith(prefix):
                price = candidate
                break
        if len(found) >= MAX_FOUND:
            found.clear()
        found[key] = price
        return price

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefixes)

    def cost_pusd(
        self,
        provider_type: str,
        models: tuple[str | None, ...],
        *,
        input: int,
        output: int,
        cache_read: int,
        cache_write: int,
    ) -> int | None:
        """The cost of one upstream call in pico-USD, priced by the first of ``models``
        that has a price (the model the response names, then the one the request named),
        or None when none has (the call is "unpriced" and counts zero against budgets).

        The recorder and the limiter both price through here, so a budget settles to
        exactly what the records say.
        """
        for model in models:
            if model:
                price = self.lookup(provider_type, model)
                if price is not None:
                    return price.cost_pusd(
                        input=input, output=output, cache_read=cache_read, cache_write=cache_write
                    )
        return None


EMPTY_PRICES = PriceTable()
"""A table that prices nothing."""


class PriceBook:
    """The price table this process uses now; replaced whole when prices change (the
    reload path), read without a lock (one attribute load)."""

    __slots__ = ("table",)

    def __init__(self, table: PriceTable = EMPTY_PRICES) -> None:
        self.table = table

    def replace(self, table: PriceTable) -> None:
        """Use ``table`` from now on."""
        self.table = table
