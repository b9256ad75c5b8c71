"""How a worker lives with a failing terminal: the retry delay (`Backoff`) and the log lines
of failing sessions (`FailureLog`, one per change rather than one per retry).

Kept apart from the worker so the session loop reads as what it does, not how it words it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import structlog

from punchgate.gateway.faults import NO_CODES

log = structlog.get_logger("punchgate.gateway.worker")


class Backoff:
    """Exponential backoff with full jitter, so a fleet that fails together retries apart."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2**self.attempt))
        self.attempt += 1
        return random.uniform(self.minimum, max(self.minimum, ceiling))

    def reset(self) -> None:
        self.attempt = 0


# A terminal that stays down is retried every few seconds (Backoff); its log says so once, then
# reminds at this interval (seconds) with the number of failed attempts since the last line.
SESSION_FAILED_REMIND_EVERY = 600.0


class FailureLog:
    """The log lines of a terminal's failing sessions: one per change, not one per retry.

    The first failure, and the first with each other fault in the same streak, is logged at
    once (`session_failed`). After that, a `session_still_failing` reminder comes at most every
    `remind_every` seconds with the failures since the previous line (so a terminal that
    alternates between two faults costs no more); the first good session after failures logs
    `session_recovered` with their number. The health model raises and clears the fault
    itself, once each (fault_raised / fault_cleared).
    """

    def __init__(
        self,
        *,
        remind_every: float = SESSION_FAILED_REMIND_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remind_every = remind_every
        self._clock = clock
        self.fault: str | None = None  # the latest fault of the current failing streak
        self.failures = 0  # failed sessions in the current streak
        # Faults of this streak already logged, rebound, not mutated (`NO_CODES`).
        self._logged_faults = NO_CODES
        self._unreported = 0  # of those, failures not yet counted in a line
        self._down_since = 0.0
        self._logged_at = 0.0

    def failed(self, fault: str, error: str) -> None:
        now = self._clock()
        self.failures += 1
        if self.fault is None:
            self._down_since = now
        previous, self.fault = self.fault, fault
        if fault not in self._logged_faults:
            self._logged_faults |= {fault}
            changed = {} if previous is None else {"previous_fault": previous}
            log.warning("session_failed", fault=fault, error=error, **changed)
        elif now - self._logged_at >= self.remind_every:
            log.warning(
                "session_still_failing",
                fault=fault,
                error=error,
                failures_since_last_line=self._unreported + 1,
                failures=self.failures,
                failing_for_seconds=round(now - self._down_since),
            )
        else:
            self._unreported += 1
            return
        self._logged_at, self._unreported = now, 0

    def succeeded(self) -> None:
        if self.fault is None:
            return
        log.info(
            "session_recovered",
            fault=self.fault,
            failures=self.failures,
            failing_for_seconds=round(self._clock() - self._down_since),
        )
        self.fault, self.failures, self._unreported = None, 0, 0
        self._logged_faults = NO_CODES
