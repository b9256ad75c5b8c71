"""When a worker's polls fall due: its own timer on a grid of `poll_interval` with a phase.

The grid starts when the worker starts. The first contact waits `first_poll_in` (a fleet started
together does not read together); the grid's next point after it is at least half an interval
on. A poll that falls due while the loop is held up is one poll served late, never a burst.
`due_at` is when the pending poll fell due, so poll lag counts from the due time, not from
when the worker got round to it.
"""

from __future__ import annotations

import asyncio
import math
import time


class PollGrid:
    def __init__(self, *, interval: float, first_poll_in: float, phase: float | None) -> None:
        self.interval = interval
        self.first_poll_in = first_poll_in
        self.phase = first_poll_in if phase is None else phase
        self.due = asyncio.Event()  # set while a poll is due
        self.due_at: float | None = None  # time.monotonic() at which the pending poll fell due
        self._origin = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start the grid now; the first contact falls due `first_poll_in` from now."""
        self._origin = time.monotonic()
        self._arm(self._origin + self.first_poll_in, first=True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def request(self) -> None:
        """A poll falls due now (the scheduler's or an operator's request; on the event loop)."""
        if self.due_at is None:
            self.due_at = time.monotonic()
        self.due.set()

    def take_lag(self, started: float) -> float | None:
        """Seconds between the pending poll falling due and `started`; None if none was due."""
        if self.due_at is None:
            return None
        lag = started - self.due_at
        self.due_at = None
        return lag

    def _arm(self, due: float, *, first: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._fall_due, due, first)

    def _fall_due(self, due: float, first: bool) -> None:
        if self.due_at is None:
            self.due_at = due
        self.due.set()
        self._arm(self._next_due(due + self.interval / 2 if first else due))

    def _next_due(self, after: float) -> float:
        """The first point of the grid later than `after` and than now."""
        after = max(after, time.monotonic())
        grid = self._origin + self.phase
        steps = math.floor((after - grid) / self.interval) + 1
        return grid + max(0, steps) * self.interval
