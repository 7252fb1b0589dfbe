"""The gateway's side of the limiter: refusals answered and recorded, the admitted
response's rate-limit headers, and every upstream call's usage fed to the ticket.

The limiter (:mod:`aibridge.governance.limiter`) decides; this module only shapes what
the client and the records see:

- a :class:`~aibridge.governance.limiter.Refusal` is answered in the provider's error
  shape (:func:`~aibridge.intercept.errors.refusal_body`) with its ``Retry-After`` and
  ``x-ratelimit-*`` headers, and recorded as an interception whose error type names the
  limit (:func:`refusal_outcome`);
- an admitted request's ``x-ratelimit-*`` headers (the gateway's own limits, so SDKs and
  agents back off on them) are added when its response is prepared
  (:func:`add_ratelimit_headers`, an ``on_response_prepare`` signal): the relays build
  the response, and a stream's headers leave before its first event. An upstream 429
  keeps the upstream's own headers: that answer is about the upstream's limits;
- :class:`SettlementAddon` adds the usage of every upstream call (each turn of the
  injected-tool loop included) to the interception's ticket, which the pipeline settles
  when the interception ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from aiohttp import web

from aibridge.governance.limiter import Refusal
from aibridge.intercept.errors import refusal_response
from aibridge.intercept.interception import Interception, Outcome
from aibridge.intercept.observations import Observation
from aibridge.providers.base import Family
from aibridge.recording.records import ErrorType

RATELIMIT_HEADERS = web.RequestKey("aibridge_ratelimit_headers", Mapping[str, str])
"""The request key of an admitted request's ``x-ratelimit-*`` headers."""

SDK_RETRY_LIMIT = 60
"""Seconds: the official SDKs honour a ``Retry-After`` up to this long and otherwise retry
on their own short backoff, which is pointless for a limit that resets much later (a
budget's period): such a refusal says ``x-should-retry: false``, which they obey."""


def refusal_outcome(refusal: Refusal) -> Outcome:
    """The recorded outcome of a refused request: the limit's error type and the message
    the client got."""
    return Outcome(cast(ErrorType, refusal.error_type), refusal.message)


def refused(family: Family, refusal: Refusal) -> web.Response:
    """The answer to a refused request, in the provider's shape."""
    headers = dict(refusal.headers)
    if refusal.status == 429 and (refusal.retry_after or 0) > SDK_RETRY_LIMIT:
        headers["x-should-retry"] = "false"
    return refusal_response(family, refusal.status, refusal.error_type, refusal.message, headers)


def add_ratelimit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add an admitted request's ``x-ratelimit-*`` headers as its response is prepared
    (none for requests the limiter had nothing to say about, or for an upstream 429):
    called from the app's one ``on_response_prepare`` handler
    (:func:`aibridge.server.app.prepare_headers`). The pipeline sets the request key only
    for a ticket with headers, so with no limit anywhere this is one failed look-up."""
    headers = request.get(RATELIMIT_HEADERS)
    if headers and response.status != 429:
        response.headers.update(headers)


class SettlementAddon:
    """Adds the usage of every upstream call an interception observed to its ticket
    (:attr:`Interception.ticket`); the pipeline settles the ticket at the end."""

    __slots__ = ()

    def started(self, ix: Interception) -> None:
        """Nothing to do: the ticket was taken before the start."""

    def observed(self, ix: Interception, observation: Observation) -> None:
        """Each usage is one upstream call, priced by the model the response names, then
        the one the request named (as the recorder prices it)."""
        ticket = ix.ticket
        if ticket is None or not ticket.counts:
            # No limit applies to this request (decided by its admission, so limits
            # added later by a reload apply from the next request on).
            return
        ptype = ix.provider.type
        requested = ix.request.model
        for usage in observation.usages:
            ticket.add_usage(
                ptype,
                (usage.model, requested),
                usage.input,
                usage.output,
                usage.cache_read,
                usage.cache_write,
            )

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        """Nothing to do: the pipeline settles after the end (it may await the store)."""


SETTLEMENT = SettlementAddon()
"""The one settlement addon (it holds no state)."""
