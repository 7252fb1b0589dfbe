"""The RequestBridge: serves a routed ``/{provider}/…`` request, bridged (the interception
pipeline) or passthrough (the reverse proxy).

A bridge is built for one actor (user + gateway key) over one provider snapshot; the
pool shares it between that actor's concurrent requests. The data-plane handler resolves
each request against that same snapshot (:attr:`RequestBridge.snapshot`), so a request is
routed and served by one provider generation. Its lifecycle (admission,
retirement, bounded drain) is the :class:`AdmissionGate` the pool drives through
``try_admit`` / ``retire`` / ``shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from aibridge.actor import Actor
from aibridge.intercept.hooks import NO_ADDONS, Addons
from aibridge.intercept.passthrough import passthrough
from aibridge.intercept.pipeline import Interceptor
from aibridge.providers.http import UpstreamSessions
from aibridge.providers.routes import BridgedRoute, PassthroughRoute
from aibridge.providers.snapshot import ProviderSnapshot

log = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 1.0
"""How long a drain waits for cancelled requests to unwind before giving up on them."""


class Admission:
    """One request admitted onto a bridge; :meth:`release` when it is done (idempotent)."""

    __slots__ = ("_gate", "_released", "task")

    def __init__(self, gate: AdmissionGate, task: asyncio.Task[object] | None) -> None:
        self._gate = gate
        self._released = False
        # The task serving the request: a drain that times out cancels it.
        self.task = task

    def release(self) -> None:
        """Leave the bridge; a drain waiting for it may now complete."""
        if not self._released:
            self._released = True
            self._gate._leave(self)


class AdmissionGate:
    """Admission bookkeeping for a retirable bridge.

    ``try_admit`` registers the calling task until its :class:`Admission` is released;
    ``retire`` closes admission (already admitted requests continue); ``drain`` waits for
    the admitted requests, bounded, then cancels whatever is left. Everything except
    ``drain`` is synchronous, so within one event loop "check retired, then admit" cannot
    interleave with a retirement.
    """

    def __init__(self) -> None:
        self._admitted: set[Admission] = set()
        self._retired = False
        # Set whenever nothing is admitted. asyncio.Event binds to a loop only on first
        # wait, so a gate may be created outside a running loop.
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def retired(self) -> bool:
        """True once admission is closed."""
        return self._retired

    @property
    def active(self) -> int:
        """Number of admitted requests still running."""
        return len(self._admitted)

    def try_admit(self) -> Admission | None:
        """Admit the current task, or None when the gate is retired."""
        if self._retired:
            return None
        admission = Admission(self, asyncio.current_task())
        self._admitted.add(admission)
        self._idle.clear()
        return admission

    def _leave(self, admission: Admission) -> None:
        self._admitted.discard(admission)
        if not self._admitted:
            self._idle.set()

    def retire(self) -> None:
        """Stop admitting; requests already admitted keep running."""
        self._retired = True

    # The bound cancels the *admitted requests*, not this call, so asyncio.timeout() around
    # the call is not a substitute.
    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Retire, wait up to ``timeout`` s for admitted requests, then cancel the rest.

        True when every request finished on its own. If the drain itself is cancelled
        (a forced pool shutdown), the admitted requests are cancelled too.
        """
        self._retired = True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            self._cancel_admitted()
            raise
        leftover = self._cancel_admitted()
        log.warning(
            "bridge retirement timed out; cancelled admitted requests",
            extra={"cancelled": leftover, "timeout_seconds": timeout},
        )
        # Bounded: a request that swallows cancellation must not pin the retirement.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_GRACE_SECONDS):
                await self._idle.wait()
        return False

    def _cancel_admitted(self) -> int:
        current = asyncio.current_task()
        cancelled = 0
        for admission in list(self._admitted):
            task = admission.task
            if task is not None and task is not current and not task.done():
                task.cancel()
                cancelled += 1
        return cancelled


class RequestBridge:
    """Serves data-plane requests for one actor over one provider snapshot.

    ``hooks`` are the addons (metrics, recording) that observe its interceptions and
    passthrough requests.
    """

    def __init__(
        self,
        snapshot: ProviderSnapshot,
        actor: Actor,
        sessions: UpstreamSessions,
        *,
        max_body_bytes: int,
        hooks: Addons = NO_ADDONS,
    ) -> None:
        self.snapshot = snapshot
        self.actor = actor
        self.sessions = sessions
        self.max_body_bytes = max_body_bytes
        self.hooks = hooks
        self._interceptor = Interceptor(actor, sessions, hooks, max_body_bytes=max_body_bytes)
        self._gate = AdmissionGate()

    # -- lifecycle (driven by the pool) ------------------------------------------

    def try_admit(self) -> Admission | None:
        """Admit the current request, or None once the bridge is retired."""
        return self._gate.try_admit()

    def retire(self) -> None:
        """Stop admitting new requests; admitted ones finish normally."""
        self._gate.retire()

    @property
    def retired(self) -> bool:
        """True once the bridge no longer admits requests."""
        return self._gate.retired

    async def shutdown(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 (see drain)
        """Retire and wait up to ``timeout`` s for admitted requests, then cancel them.

        The bridge owns no connections itself (upstream sessions are process-wide and the
        MCP proxier belongs to the pool that created it), so draining is all there is.
        """
        return await self._gate.drain(timeout)

    async def handle(
        self,
        request: web.Request,
        route: BridgedRoute | PassthroughRoute,
        *,
        byok: bool = False,
    ) -> web.StreamResponse:
        """Serve ``request`` on ``route`` (resolved against :attr:`snapshot`)."""
        if isinstance(route, BridgedRoute):
            return await self._interceptor.handle(request, route, byok=byok)
        self.hooks.passed_through(route, request.method)
        return await passthrough(
            request, route, self.sessions, byok=byok, max_body_bytes=self.max_body_bytes
        )
