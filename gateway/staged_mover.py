"""Staged punches brought into the outbox: `StagedMover` and its timing, `MovePolicy`.

A push terminal's backlog part is staged (`Store.add_or_stage`, `sync/buffer_staging.py`):
committed durably to a table without the `id` index, and answered at once. The mover takes
what is staged into the outbox (`Store.move_staged`), where the forwarder finds it.

When (`MovePolicy`):

* as soon as something is staged, in general;
* not while a backlog is streaming in (a part of `STAGE_MIN` punches or more staged within the
  last `STREAM_GAP` seconds): the receiver, the move and the forwarder share one interpreter
  and two cores with the broker, so a move during an upload slows the upload by as much CPU
  as it takes, and the terminal's next part waits for each answer (bench/notes.md, issue 19).
  Never longer than `MAX_WAIT` seconds after the oldest punch waiting was staged, nor beyond
  `MAX_WAITING` staged punches: a terminal that never stops uploading cannot hold the
  others' punches back;
* at start: whatever an earlier run staged (a gateway killed after answering) first;
* at a stop, once the push listener closed: at once, so the last drain forwards it too.

A move is one transaction of at most `MOVE_AT_ONCE` punches (their rows are read back for
the audit entry); the next follows at once while more are due. A move that fails leaves its
punches staged: logged, tried again after `RETRY_AFTER` seconds. After each move the
forwarder is told, and each terminal's health counts its new punches.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from punchgate.sync.buffer_staging import Moved

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)

STAGE_MIN = 50  # punches in one upload that make it a backlog part: staged, not inserted
STREAM_GAP = 0.5  # seconds after a backlog part within which the terminal's next one is expected
MAX_WAIT = 10.0  # seconds a staged punch waits for a backlog to end, at most
MAX_WAITING = 200_000  # staged punches beyond which moves go on during a backlog
MOVE_AT_ONCE = 20_000  # punches a move takes into the outbox in one transaction
RETRY_AFTER = 5.0  # seconds after a failed move


class MovePolicy:
    """When the next move may run (pure: the clock is given)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last_part = -math.inf  # when the latest backlog part was staged
        self._waiting_since: float | None = None  # the oldest staged punch not moved yet
        self.uploads_over = False  # the listener closed (shutdown): nothing is worth waiting for

    def staged(self, punches: int) -> None:
        now = self.clock()
        if punches >= STAGE_MIN:
            self._last_part = now
        if self._waiting_since is None:
            self._waiting_since = now

    def all_moved(self) -> None:
        self._waiting_since = None

    def wait(self, staged: int) -> float:
        """Seconds until a move is due with `staged` punches waiting; 0: now."""
        now = self.clock()
        if staged >= MAX_WAITING or self.uploads_over:
            return 0.0
        since = now if self._waiting_since is None else self._waiting_since
        return max(0.0, min(self._last_part + STREAM_GAP, since + MAX_WAIT) - now)


class StagedMover:
    """Runs the moves for the gateway (`run`, a service task); `staged()` after each staging."""

    def __init__(self, app: Application, policy: MovePolicy | None = None) -> None:
        self.app = app
        self.policy = policy or MovePolicy()
        self._wake = asyncio.Event()
        self.moved = 0  # punches taken from staging
        self.failures = 0

    def staged(self, punches: int) -> None:
        """A part of `punches` was staged (on the event loop, after its commit)."""
        self.policy.staged(punches)
        self._wake.set()

    def uploads_over(self) -> None:
        """The push listener closed (the gateway stops): move what is staged now, so the last
        drain can forward it."""
        self.policy.uploads_over = True
        self._wake.set()

    async def run(self) -> None:
        store = self.app.store
        assert store is not None
        while True:
            waiting = store.staged_count()
            if not waiting:
                self.policy.all_moved()
                self._wake.clear()
                if not store.staged_count():  # nothing staged between the count and the clear
                    await self._wake.wait()
                continue
            delay = self.policy.wait(waiting)
            if delay > 0:
                self._wake.clear()  # a new part wakes it to look again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            if not await self._move_once():
                await asyncio.sleep(RETRY_AFTER)

    async def _move_once(self) -> bool:
        store = self.app.store
        assert store is not None
        # A move is one transaction in a thread; cancelled (shutdown), it is waited for, so the
        # buffer is closed only after it committed or rolled back.
        move = asyncio.ensure_future(asyncio.to_thread(store.move_staged, MOVE_AT_ONCE))
        try:
            moved = await asyncio.shield(move)
        except asyncio.CancelledError:
            await asyncio.wait({move})
            raise
        except Exception as exc:
            self.failures += 1
            log.error("staged_move_failed", error=f"{type(exc).__name__}: {exc}", staged=store.staged_count())
            return False
        self.after_move(moved)
        return True

    def after_move(self, moved: Moved) -> None:
        """Tell the forwarder and the terminals' health models what a move brought in."""
        self.moved += moved.total_taken
        new = sum(len(ids) for ids in moved.inserted.values())
        if new and self.app.forwarder is not None:
            self.app.forwarder.notify_new_punches()
        for device, ids in moved.inserted.items():
            health = self.app.devices.get(device)
            if health is not None:
                health.staged_punches_moved(len(ids))
        log.info("staged_moved", punches=moved.total_taken, new=new)
