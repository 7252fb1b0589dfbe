"""What the pool needs from a bridge to admit requests onto it and retire it."""

from __future__ import annotations

from typing import Protocol


class AdmissionTicket(Protocol):
    """A request admitted onto a bridge."""

    def release(self) -> None:
        """The request is done (must be idempotent)."""
        ...


class PoolBridge(Protocol):
    """The lifecycle a pooled bridge must support (``RequestBridge`` implements it)."""

    def try_admit(self) -> AdmissionTicket | None:
        """Admit the current request, or None once retired."""
        ...

    def retire(self) -> None:
        """Stop admitting; admitted requests continue. Synchronous and idempotent."""
        ...

    async def shutdown(self, timeout: float) -> bool:  # noqa: ASYNC109 (cancels requests)
        """Wait up to ``timeout`` s for admitted requests, then cancel them."""
        ...
