"""The recording addon: writes an interception's records from the pipeline's hooks.

Every hook only queues: ``started`` before the upstream call, ``observed`` as responses are
read, ``ended`` before the client sees the response end. The recorder journals each record
as it is queued (the start and the end at once), so nothing on the request path waits for
the database.
"""

from __future__ import annotations

from typing import Protocol

from aibridge.governance.prices import PriceBook
from aibridge.recording.mapping import (
    InterceptionView,
    InvocationView,
    ObservationView,
    OutcomeView,
    end_record,
    injected_tool_record,
    observation_records,
    start_record,
)
from aibridge.recording.records import Record


class RecordQueue(Protocol):
    """What the addon needs of the recorder (:class:`aibridge.recording.Recorder`)."""

    def record(self, rec: Record) -> None:
        """Queue a record without waiting."""


class RecordingAddon:
    """Maps every hook call to records (:mod:`aibridge.recording.mapping`) for the recorder,
    pricing each upstream call with the process's live price table (``prices``; a
    book of no prices when not given, so every call is recorded unpriced)."""

    __slots__ = ("prices", "recorder")

    def __init__(self, recorder: RecordQueue, prices: PriceBook | None = None) -> None:
        self.recorder = recorder
        self.prices = prices if prices is not None else PriceBook()

    def started(self, ix: InterceptionView) -> None:
        """Queue the start record (journaled at once, before the upstream call)."""
        self.recorder.record(start_record(ix))

    def observed(self, ix: InterceptionView, observation: ObservationView) -> None:
        """Queue usage, prompt, tool-call and thought records."""
        record = self.recorder.record
        # One attribute read: a reload swaps the whole table, never edits it in place.
        for rec in observation_records(ix, observation, self.prices.table):
            record(rec)

    def tool_invoked(self, ix: InterceptionView, invocation: InvocationView) -> None:
        """Queue the tool usage of an injected MCP call (``injected`` true)."""
        self.recorder.record(injected_tool_record(ix, invocation))

    def ended(self, ix: InterceptionView, outcome: OutcomeView) -> None:
        """Queue the end record (journaled before the client sees the response end)."""
        self.recorder.record(end_record(ix, outcome))
