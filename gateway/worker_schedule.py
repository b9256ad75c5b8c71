"""When a worker's polls fall due: its own timer on a grid of `poll_interval` with a phase.

The grid starts when the worker starts. The first contact waits `first_poll_in` (a fleet started
together does not read together); the grid's next point after it is at least half an interval
on. A poll that falls due while the loop is held up is one poll served late, never a burst.
`due_at` is when the pending poll fell due, so poll lag counts from the due time, not from
when the worker got round to it.

`Flag` is asyncio.Event's set/clear/is_set/wait for the worker's own flags, and `wait_any`
waits for the first of several: a worker spends most of its life waiting for its next poll,
and a fleet has thousands. An asyncio.Event carries a deque (760 bytes, even empty), and
waiting for either of two Events took two tasks, their coroutines and asyncio.wait's
callbacks for as long as the wait lasted: about 4 KB a terminal in tracemalloc of a
1,000-terminal daemon, and two tasks created and cancelled at every poll. A `Flag` holds its
waiters only while someone waits; `wait_any` is one future and one timer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence


class Flag:
    """asyncio.Event's set/clear/is_set/wait, with its waiters kept only while there are any."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        await wait_any((self,))
        return True

    def _add(self, waiter: asyncio.Future[None]) -> None:
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def wait_any(flags: Sequence[Flag], timeout: float | None = None) -> None:
    """Until one of `flags` is set, or `timeout` seconds have passed (None: no limit)."""
    if any(flag.is_set() for flag in flags):
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    for flag in flags:
        flag._add(waiter)
    timer = loop.call_later(timeout, _settle, waiter) if timeout is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for flag in flags:
            flag._discard(waiter)


class PollGrid:
    def __init__(self, *, interval: float, first_poll_in: float, phase: float | None) -> None:
        self.interval = interval
        self.first_poll_in = first_poll_in
        self.phase = first_poll_in if phase is None else phase
        self.due = Flag()  # set while a poll is due
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
