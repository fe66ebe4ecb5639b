"""Log lines about what strangers do, rate-limited: one per interval, then a count of the rest.

A node logs every refused connection and protocol violation with the remote address (an
operator needs to see an attack or a misconfigured peer), but a flood of bad connections must
not become a flood of log lines: past the first line of an interval, lines are counted and
the count is reported with the next line that gets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = 1.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.burst = burst
        self.clock = clock
        self.suppressed = 0
        self._window_start = -float("inf")
        self._in_window = 0

    def warning(self, fmt: str, *args: Any) -> bool:
        return self.log(logging.WARNING, fmt, *args)

    def log(self, level: int, fmt: str, *args: Any, exc_info: bool = False) -> bool:
        """Log the line unless ``burst`` lines went out this interval; True if it did."""
        now = self.clock()
        if now - self._window_start >= self.interval_s:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return False
        self._in_window += 1
        if self.suppressed:
            fmt += " (%d similar lines suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self.logger.log(level, fmt, *args, exc_info=exc_info)
        return True
