"""The gateway-wide bound on full reads running at once (`FullReadLimiter`).

Shared by every `DeviceWorker` of an event loop; kept apart from the worker because it is a
small concurrency primitive of its own, with its own fairness rule and tests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from collections.abc import AsyncGenerator

# How many full reads (read + normalise + commit) run at once across all workers, and how many
# records they may hold between them (each terminal's count as it last said). Commits are
# serialised by the store anyway; without a bound, a fleet's reads (e.g. 500 terminals at
# start-up) all sit in memory at once waiting for the store: ~60 MB of punch objects for
# 500 × 200 records, and a first read holds about 2 kB a record. The slots match the ZK
# driver's thread pool, so small reads never wait on each other for longer than they would
# for a pool thread; the records bound keeps 32 reads of big logs from holding 100+ MB.
FULL_READ_SLOTS = 32
FULL_READ_RECORDS = 20_000
_read_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FullReadLimiter] = (
    weakref.WeakKeyDictionary()
)


class FullReadLimiter:
    """At most `slots` full reads at once, holding at most `records` records between them
    (a read larger than that runs alone). First come, first served: a big read is not passed
    by small ones for ever."""

    def __init__(self, slots: int = FULL_READ_SLOTS, records: int = FULL_READ_RECORDS) -> None:
        self.slots, self.records = slots, records
        self.reads = self.held = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, records: int) -> bool:
        return self.reads < self.slots and (self.reads == 0 or self.held + records <= self.records)

    def _take(self, records: int) -> None:
        self.reads += 1
        self.held += records

    def _release(self, records: int) -> None:
        self.reads -= 1
        self.held -= records
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            waiting, future = self._waiting.popleft()
            if not future.done():
                self._take(waiting)
                future.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self, records: int) -> AsyncGenerator[None, None]:
        records = max(1, records)
        if not self._waiting and self._fits(records):
            self._take(records)
        else:
            future = asyncio.get_running_loop().create_future()
            entry = (records, future)
            self._waiting.append(entry)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release(records)  # granted just as we were cancelled: give it back
                else:
                    with contextlib.suppress(ValueError):
                        self._waiting.remove(entry)
                    self._wake()  # those behind it may fit now
                raise
        try:
            yield
        finally:
            self._release(records)


def full_read_limiter() -> FullReadLimiter:
    """The gateway-wide full-read limiter of the running event loop (one per loop: tests run many)."""
    loop = asyncio.get_running_loop()
    limiter = _read_limiters.get(loop)
    if limiter is None:
        limiter = _read_limiters[loop] = FullReadLimiter()
    return limiter
