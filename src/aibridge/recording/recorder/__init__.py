"""The recorder: a bounded queue drained in batches; nothing on the request path waits for
the database.

:class:`Recorder` is a facade over two parts, each in its own private module:

* ``_batches`` — the **batch writer**. :meth:`Recorder.record` appends to an
  in-memory deque and bumps a counter; it never awaits anything. A background task writes
  batches through the :class:`~aibridge.recording.sink.Sink`, holds and retries a batch
  while the database is down (back-pressure, then the spill file), isolates records the
  database refuses ("poison" records, kept in ``<spill>.rejected``) and keeps end records
  whose start row is not there yet.
* ``_replay`` — the **spill replayer**. Records that cannot wait in memory go to the spill
  file; a background task re-inserts them once the database answers (inserts are
  idempotent by primary key, so a crash between a write and the deletion of the replayed
  file causes no duplicates).

:meth:`Recorder.close` drains the queue to the database, or to the spill file when the
database is down or the timeout expires.

Crash safety (:mod:`aibridge.recording.journal`): every record queued by
:meth:`Recorder.record` is appended to the journal first and acknowledged there once it is
in the database, the spill file or the rejected file. At :meth:`Recorder.start` what
previous runs left unacknowledged is moved to the spill file (and so replayed like any
spill); once that first replay is done, the interceptions previous runs of this replica
left open are ended with ``error_type = gateway_restart``.
"""

from aibridge.recording.recorder._recorder import SPILL_FILE_NAME, Recorder

__all__ = ["SPILL_FILE_NAME", "Recorder"]
