"""Recording: record types, the recorder (journal, batch writer, spill replay), and sinks.

Typical wiring (see :class:`Recorder`)::

    recorder = Recorder.for_database(services.sessions, settings.data_dir)
    await recorder.start()
    ...
    recorder.record(InterceptionStarted(...))  # before upstream; journaled at once
    recorder.record(TokenUsageRecord(...))     # never waits
    recorder.record(InterceptionEnded(id=...))
    ...
    await recorder.close(timeout=10)
"""

from aibridge.recording.recorder import SPILL_FILE_NAME, Recorder
from aibridge.recording.records import (
    CREDENTIAL_KINDS,
    ERROR_TYPES,
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Record,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
    record_from_json,
    record_to_json,
)
from aibridge.recording.sink import DatabaseSink, ListSink, Sink

__all__ = [
    "CREDENTIAL_KINDS",
    "ERROR_TYPES",
    "SPILL_FILE_NAME",
    "DatabaseSink",
    "InterceptionEnded",
    "InterceptionStarted",
    "ListSink",
    "PromptRecord",
    "Record",
    "Recorder",
    "Sink",
    "ThoughtRecord",
    "TokenUsageRecord",
    "ToolUsageRecord",
    "record_from_json",
    "record_to_json",
]
