"""The recording addon: writes an interception's records from the pipeline's hooks.

``started`` writes the start record and waits for it (the one synchronous database write
on the request path, before the upstream call); ``observed`` and ``ended`` only queue.
"""

from __future__ import annotations

from typing import Protocol

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
from aibridge.recording.records import InterceptionStarted, Record


class RecordQueue(Protocol):
    """What the addon needs of the recorder (:class:`aibridge.recording.Recorder`)."""

    async def record_interception_start(self, rec: InterceptionStarted) -> bool:
        """Write the start record now (or queue it when the database is slow or down)."""

    def record(self, rec: Record) -> None:
        """Queue a record without waiting."""


class RecordingAddon:
    """Maps every hook call to records (:mod:`aibridge.recording.mapping`) for the recorder."""

    __slots__ = ("recorder",)

    def __init__(self, recorder: RecordQueue) -> None:
        self.recorder = recorder

    async def started(self, ix: InterceptionView) -> None:
        """Write the start record before the upstream call."""
        await self.recorder.record_interception_start(start_record(ix))

    def observed(self, ix: InterceptionView, observation: ObservationView) -> None:
        """Queue usage, prompt, tool-call and thought records."""
        record = self.recorder.record
        for rec in observation_records(ix, observation):
            record(rec)

    def tool_invoked(self, ix: InterceptionView, invocation: InvocationView) -> None:
        """Queue the tool usage of an injected MCP call (``injected`` true)."""
        self.recorder.record(injected_tool_record(ix, invocation))

    def ended(self, ix: InterceptionView, outcome: OutcomeView) -> None:
        """Queue the end record (journaled before the client sees the response end)."""
        self.recorder.record(end_record(ix, outcome))
