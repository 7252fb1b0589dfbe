"""The pool's errors (all :class:`PoolError`)."""

from __future__ import annotations


class PoolError(Exception):
    """Base class of the pool's errors."""


class PoolShuttingDown(PoolError):
    """The pool is shutting down (or shut down) and takes no new work."""

    def __init__(self) -> None:
        super().__init__("pool shutting down")


class GenerationRetired(PoolError):
    """The bridge was built for a provider generation that has been replaced."""

    def __init__(self) -> None:
        super().__init__("provider generation retired")


class BridgeBuildExited(PoolError):
    """The build task ended without a result (it was cancelled)."""

    def __init__(self) -> None:
        super().__init__("request bridge build exited")


class RetryLimitExceeded(PoolError):
    """Every attempt lost a race with a retirement; ``reason`` is the last one."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"request bridge retry limit exceeded: {reason}")
        self.reason = reason


class BridgeBuildError(PoolError):
    """The builder failed; the cause is chained."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"create new request bridge: {cause}")
