"""One bridged request as the pipeline's hooks see it, and how it ended.

An :class:`Interception` is created once the request is accepted (body decoded, credential
chosen) and handed to every hook (:mod:`aibridge.intercept.hooks`); an :class:`Outcome` is
the value each relay returns and the end hook receives.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aibridge.actor import Actor
from aibridge.governance.limiter import Ticket
from aibridge.intercept.request import RequestInfo
from aibridge.providers.base import APIName, Provider
from aibridge.recording.records import CLIENT_DISCONNECTED, ErrorType

if TYPE_CHECKING:
    from aibridge.intercept.spans import InterceptionTrace


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an interception ended: no error type when it completed."""

    error_type: ErrorType | None = None
    error_message: str | None = None


COMPLETED = Outcome()
"""The response reached the client whole (a stream: through its terminal event, even if the
client left before the upstream closed its side)."""

CLIENT_GONE = Outcome(CLIENT_DISCONNECTED, "client disconnected")
"""The client went away first: aiohttp cancelled the handler, or a write found the socket
closed."""


@dataclass(slots=True, eq=False)
class Interception:
    """One client request to a bridged route.

    ``byok_hint`` is the masked hint of the client's own key (None: the key ring);
    ``credential_hint`` the pooled key's hint once the upstream call picked one.
    ``started_at`` is the wall-clock start (records), ``began`` the ``perf_counter()``
    start (durations). ``interrupted`` is the outcome a relay settled on before the task
    was cancelled (the client left mid-stream), which the pipeline reports instead of
    :data:`CLIENT_GONE`. ``ticket`` is the limiter's admission (None until admitted):
    the settlement addon adds the usage of every upstream call to it.
    """

    id: uuid.UUID
    provider: Provider
    api: APIName
    actor: Actor
    request: RequestInfo
    client: str
    user_agent: str | None
    session_id: str | None
    byok_hint: str | None
    started_at: datetime
    began: float
    credential_hint: str | None = None
    interrupted: Outcome | None = None
    ticket: Ticket | None = None
    trace: InterceptionTrace | None = None
    """Its spans, when tracing is on (None: off)."""

    @property
    def model(self) -> str:
        """The model the client asked for ("" when it named none)."""
        return self.request.model or ""
