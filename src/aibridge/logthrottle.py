"""One log line per interval for the malformed requests aiohttp rejects itself.

aiohttp answers a request it cannot parse (request line or header too long, invalid
characters in the path, bad header tokens) with a 400 and logs each one at ERROR with a
full traceback on ``aiohttp.server``. Anyone who can reach the port could fill the log
that way, and the lines even quote up to 8 KiB of the attacker's bytes. This filter lets
the first such record of each interval through, rewritten as one short WARNING without
the traceback, and counts the others; the next line that gets through reports how many
were not logged since the previous one (``suppressed``).
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from aibridge.clock import SYSTEM_CLOCK, Clock

SERVER_LOGGER = "aiohttp.server"
_REASON_CHARS = 200


class BadRequestLogThrottle(logging.Filter):
    """Aggregates ``aiohttp.server``'s records for rejected malformed requests (see module
    docstring); every other record passes unchanged."""

    def __init__(self, interval: float = 60.0, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the first malformed-request record per interval through, rewritten."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= exc.code < 500:
            return True
        now = self._clock.monotonic()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return False
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        # The first line of aiohttp's message only, shortened: the rest quotes raw input.
        reason = " ".join(str(exc.message).split("\n", 1)[0].split())[:_REASON_CHARS]
        record.msg = "rejected a malformed HTTP request from %s: %s: %s"
        record.args = (remote, type(exc).__name__, reason)
        record.exc_info = record.exc_text = record.stack_info = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.suppressed = suppressed
        record.interval_seconds = self.interval
        return True


def throttle_bad_request_logs(
    interval: float = 60.0, clock: Clock = SYSTEM_CLOCK
) -> BadRequestLogThrottle:
    """Install a :class:`BadRequestLogThrottle` on ``aiohttp.server`` (replacing any earlier
    one) and return it."""
    logger = logging.getLogger(SERVER_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, BadRequestLogThrottle)]:
        logger.removeFilter(old)
    throttle = BadRequestLogThrottle(interval, clock)
    logger.addFilter(throttle)
    return throttle
