"""Group commit: the punches many polled terminals read within a moment, stored in one write.

At a factory's rate every poll of every terminal finds a punch or two. Committed one poll at a
time, 5,000 terminals polled every 30 s make about 170 fsynced commits a second, each a thread
hop, and as many wake-ups of the forwarder, each a read, a publish and an fsynced delivery mark
for two punches. That, not the terminals, was most of what a poll cost.

`CommitGroup` gathers what workers hand it for up to `gather` seconds and stores it with one
`Store.add_punches` (one transaction, one fsync, one thread hop), then tells the forwarder once.
Each worker still waits until its own punches are durably stored before it counts them as
stored, exactly as with a commit of its own; a poll's answer comes at most `gather` later,
which a 30 s poll interval does not notice. A live punch is `urgent`: it is written at once,
with whatever waits beside it, so the live path gains no latency. A write is also started at
once when `max_punches` wait (a burst of reads must not build one huge transaction).

A refusal (`StoreRefusedError`: buffer full, disk low) is each worker's own: when the grouped
write is refused, every worker's part is written again on its own (a no-op for ids already
stored), so each one learns what of *its* punches went in and gets its own refusal, as before.
Any other error fails every part of that write, as it would have failed each commit.

`DirectCommit` is the same interface without grouping: one commit per call (full reads, whose
parts are large already, and workers built without a group, as tests build them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from punchgate.sync.records import Punch
from punchgate.sync.store import Store, StoreRefusedError

if TYPE_CHECKING:
    from punchgate.gateway.worker import PunchSink

log = structlog.get_logger(__name__)

GATHER_SECONDS: Final = 0.25  # how long a polled read's punches wait for company
MAX_PUNCHES: Final = 5_000  # write at once when this many wait


class PunchWriter(Protocol):
    async def add(self, punches: Sequence[Punch], *, urgent: bool) -> list[str]:
        """Store `punches` durably; the ids that were new. StoreRefusedError as `Store.add_punches`."""
        ...


class DirectCommit:
    """One commit per call, the forwarder told at once (the behaviour before groups)."""

    def __init__(self, store: Store, sink: PunchSink) -> None:
        self.store = store
        self.sink = sink

    async def add(self, punches: Sequence[Punch], *, urgent: bool) -> list[str]:
        try:
            # Shielded: a shutdown that cancels us mid-commit must still let the commit finish.
            inserted = await asyncio.shield(asyncio.to_thread(self.store.add_punches, punches))
        except StoreRefusedError as exc:
            if exc.stored:  # the part that fit under the limit is stored: send it on
                self.sink.notify_new_punches()
            raise
        if inserted:
            self.sink.notify_new_punches()
        return inserted


Outcome = list[str] | BaseException


def write_parts(store: Store, parts: Sequence[Sequence[Punch]]) -> list[Outcome]:
    """Store every part in one transaction; per part, the ids that were new, or its error.
    Runs in a thread. A refused write is done again part by part (see the module's text)."""
    try:
        inserted = set(store.add_punches([p for part in parts for p in part]))
    except StoreRefusedError as refused:
        stored_before = set(refused.stored)
        return [_write_alone(store, part, stored_before) for part in parts]
    return [[p.id for p in part if p.id in inserted] for part in parts]


def _write_alone(store: Store, part: Sequence[Punch], stored_before: set[str]) -> Outcome:
    """One part on its own, after the grouped write was refused; what the grouped write did
    store of it counts as its own."""
    earlier = [p.id for p in part if p.id in stored_before]
    try:
        return earlier + store.add_punches(part)
    except StoreRefusedError as exc:
        return type(exc)(str(exc), stored=earlier + exc.stored)


class _Waiting:
    __slots__ = ("done", "punches")

    def __init__(self, punches: Sequence[Punch], done: asyncio.Future[list[str]]) -> None:
        self.punches = punches
        self.done = done


class CommitGroup:
    """Stores what every worker hands it, several workers' punches per commit (module text)."""

    def __init__(
        self, store: Store, sink: PunchSink, *, gather: float = GATHER_SECONDS, max_punches: int = MAX_PUNCHES
    ) -> None:
        self.store = store
        self.sink = sink
        self.gather = gather
        self.max_punches = max_punches
        self.commits = 0  # grouped writes done (for tests and the benchmark's figures)
        self._waiting: list[_Waiting] = []
        self._punches = 0  # punches in `_waiting`
        self._now = asyncio.Event()  # write without waiting out `gather`
        self._writer: asyncio.Task[None] | None = None

    async def add(self, punches: Sequence[Punch], *, urgent: bool) -> list[str]:
        if not punches:
            return []
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)  # a caller cancelled meanwhile never reads it
        self._waiting.append(_Waiting(punches, done))
        self._punches += len(punches)
        if urgent or self._punches >= self.max_punches:
            self._now.set()
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_while_waiting())
        # Shielded: a worker cancelled now (the gateway stopping) does not take its punches out
        # of the write; `close` waits for it.
        return await asyncio.shield(done)

    async def close(self) -> None:
        """Write what waits now, and wait until it is stored (the gateway is stopping)."""
        self._now.set()
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)

    async def _write_while_waiting(self) -> None:
        try:
            while self._waiting:
                if not self._now.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.gather):
                            await self._now.wait()
                self._now.clear()
                batch, self._waiting, self._punches = self._waiting, [], 0
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await asyncio.to_thread(write_parts, self.store, [w.punches for w in batch])
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.done.cancel()
            raise
        except Exception as exc:  # every part fails, as each one's own commit would have
            log.error("group_commit_failed", parts=len(batch), error=str(exc))
            outcomes = [exc] * len(batch)
        else:
            self.commits += 1
        stored = False
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                stored = stored or bool(getattr(outcome, "stored", None))
                waiting.done.set_exception(outcome)
            else:
                stored = stored or bool(outcome)
                waiting.done.set_result(outcome)
        if stored:
            self.sink.notify_new_punches()


def _retrieve(future: asyncio.Future[list[str]]) -> None:
    if not future.cancelled():
        future.exception()
