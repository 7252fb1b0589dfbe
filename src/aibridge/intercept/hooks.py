"""Named hooks through which metrics and recording observe the pipeline (addons).

The pipeline calls, per interception: ``started(ix)`` once the request is accepted and
before the upstream call (the recording addon journals and queues the start record here);
``observed(ix, observation)`` with what a response said (usage, tool calls, …), also when
the client left mid-stream; ``ended(ix, outcome)`` exactly once at the end, before the
client sees the response end; ``tool_invoked(ix, invocation)`` for every injected MCP tool
call (:mod:`aibridge.intercept.agentic`). The bridge calls
``passed_through(route, method)`` for every passthrough request.

:class:`Addons` is the composite the pipeline holds: a tuple of addons called in order,
with no per-request allocation beyond the calls themselves.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from aibridge.intercept.injection import Invocation
from aibridge.intercept.interception import Interception, Outcome
from aibridge.intercept.observations import Observation
from aibridge.providers.routes import PassthroughRoute

log = logging.getLogger(__name__)


@runtime_checkable
class InterceptionHooks(Protocol):
    """What an addon that observes interceptions provides."""

    def started(self, ix: Interception) -> None:
        """The request was accepted; called before the upstream call."""

    def observed(self, ix: Interception, observation: Observation) -> None:
        """A response (or the part of a stream relayed so far) was observed."""

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        """The interception ended (once per started interception, cancelled or not)."""


@runtime_checkable
class InjectionHooks(Protocol):
    """What an addon that observes injected MCP tool calls provides."""

    def tool_invoked(self, ix: Interception, invocation: Invocation) -> None:
        """The gateway called an injected tool for ``ix`` (or decided not to: then
        ``invocation.error`` says why)."""


@runtime_checkable
class PassthroughHooks(Protocol):
    """What an addon that counts passthrough requests provides."""

    def passed_through(self, route: PassthroughRoute, method: str) -> None:
        """A request on a passthrough route is about to be relayed."""


class Addons:
    """Calls every addon's hooks in the order given.

    An addon implements :class:`InterceptionHooks`, :class:`PassthroughHooks` or both.
    An exception from ``observed`` or ``ended`` is logged and the next addon still runs:
    a metrics bug must not cost the end record. ``started`` lets exceptions through
    (they fail the request before anything was sent upstream).

    An :class:`Addons` given as an addon is flattened into this one (its addons take its
    place, in order): every hook call is then one loop, not one loop per level.
    """

    __slots__ = ("_all", "_injection", "_interception", "_passthrough")

    _all: tuple[InterceptionHooks | PassthroughHooks | InjectionHooks, ...]

    def __init__(self, *addons: InterceptionHooks | PassthroughHooks | InjectionHooks) -> None:
        flat: list[InterceptionHooks | PassthroughHooks | InjectionHooks] = []
        for addon in addons:
            if isinstance(addon, Addons):
                flat += addon._all
            else:
                flat.append(addon)
        self._all = addons = tuple(flat)
        self._interception = tuple(a for a in addons if isinstance(a, InterceptionHooks))
        self._passthrough = tuple(a for a in addons if isinstance(a, PassthroughHooks))
        self._injection = tuple(a for a in addons if isinstance(a, InjectionHooks))

    def started(self, ix: Interception) -> None:
        """Every addon's ``started``, in order."""
        for addon in self._interception:
            addon.started(ix)

    def observed(self, ix: Interception, observation: Observation) -> None:
        """Every addon's ``observed``, in order."""
        for addon in self._interception:
            try:
                addon.observed(ix, observation)
            except Exception:
                log.exception("addon %s failed to observe a response", type(addon).__name__)

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        """Every addon's ``ended``, in order."""
        for addon in self._interception:
            try:
                addon.ended(ix, outcome)
            except Exception:
                log.exception("addon %s failed to end an interception", type(addon).__name__)

    def tool_invoked(self, ix: Interception, invocation: Invocation) -> None:
        """Every injection addon's ``tool_invoked``, in order."""
        for addon in self._injection:
            try:
                addon.tool_invoked(ix, invocation)
            except Exception:
                log.exception("addon %s failed to observe a tool call", type(addon).__name__)

    def passed_through(self, route: PassthroughRoute, method: str) -> None:
        """Every passthrough addon's ``passed_through``, in order."""
        for addon in self._passthrough:
            addon.passed_through(route, method)


NO_ADDONS = Addons()
"""Hooks that observe nothing (tests, tools)."""
