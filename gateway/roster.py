"""The pulled terminals' rosters: who is enrolled on each, kept in the buffer for exports.

Payroll exports show a name beside each user id (docs/export.md). Push terminals send their
users in OPERLOG and the push listener keeps them (`drivers/zk_push/uploads.py`); pulled
terminals (ZK pull, Anviz) say who is enrolled only when asked. So every `[roster]
refresh_hours` (the first time after a start when the stored roster is that old: a restarted
gateway of thousands of terminals does not read every roster again at once), each pulled terminal whose driver can list users gets a
`RosterJob` queued on its worker (`DeviceWorker.submit`, by the one `RosterRefresher`): it runs in the worker's own task,
between reads, once the terminal is connected, exactly like a `users.list` remote command, so
it never talks to the terminal beside a read.

The roster is stored as device meta `<device>/roster` (the key the push listener uses):
`{"serial_number", "refreshed_at", "users": {user_id: {"name", "privilege", "card"}}}`, names
as the driver decoded them with the terminal's configured encoding. Templates and passwords
are never read: `list_users` does not return them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import Field

from punchgate.drivers.base import Administered, CommandUnsupportedError, TerminalUser
from punchgate.sync.buffer_devices import ROSTER_SUFFIX
from punchgate.sync.settings import Strict

if TYPE_CHECKING:
    from punchgate.gateway.worker import DeviceWorker
    from punchgate.sync.store import Store

log = structlog.get_logger(__name__)

RETRY_SECONDS = 900.0  # after a failed refresh (the terminal went away mid-list), at most this


class RosterSettings(Strict):
    """`[roster]`: how often the pulled terminals' enrolled users are read for exports."""

    refresh_hours: float = Field(
        24,
        ge=0,
        le=24 * 30,
        description="hours between reads of each pulled terminal's enrolled users (names for exports); "
        "the first time after a start once the stored roster is that old (at once when none is); 0: never",
    )


def roster_key(device: str) -> str:
    return device + ROSTER_SUFFIX


def roster_meta(users: list[TerminalUser], serial: str, at: dt.datetime) -> dict[str, Any]:
    """What is stored for a terminal's roster (never passwords: `password_set` is left out)."""
    return {
        "serial_number": serial,
        "refreshed_at": at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "users": {u.user_id: {"name": u.name or "", "privilege": u.privilege, "card": u.card} for u in users},
    }


class RosterJob:
    """One roster read, queued on a terminal's worker (a `worker.RemoteCommand`). `done` holds
    the number of users stored, or the exception that stopped it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def run(self, worker: DeviceWorker) -> bool:
        driver = worker.driver
        if not isinstance(driver, Administered) or "list_users" in driver.cannot:
            # Not the terminal's fault: answered without a word to it, and the session goes on.
            reason = driver.cannot.get("list_users") if isinstance(driver, Administered) else None
            self.done.set_exception(
                CommandUnsupportedError(reason or f"{worker.driver_type} cannot list users")
            )
            return False
        try:
            users = await worker.call("list users", driver.list_users())
            info = worker.health.info  # the session's contact, made before any queued job runs
            meta = roster_meta(users, info.serial_number if info else "", dt.datetime.now(dt.UTC))
            await asyncio.to_thread(self.store.set_device_meta, roster_key(worker.name), meta)
        except BaseException as exc:
            # The worker decides what a failure means (a DriverError ends the session); the
            # refresher only learns it failed.
            if self.done.done():
                pass
            elif isinstance(exc, asyncio.CancelledError):
                self.done.cancel()  # the worker is stopping
            else:
                self.done.set_exception(exc)
            raise
        log.info("roster_refreshed", device=worker.name, users=len(users))
        self.done.set_result(len(users))
        return False


def first_refresh_in(store: Store, device: str, every: float, now: dt.datetime) -> float:
    """Seconds until the terminal's roster is due: `every` after its stored `refreshed_at`
    (0 when none is stored, or it cannot be read)."""
    return refresh_due_in(store.get_device_meta(roster_key(device)).get("refreshed_at"), every, now)


def refresh_due_in(stored: object, every: float, now: dt.datetime) -> float:
    """Seconds until a roster refreshed at `stored` (its stored `refreshed_at`) is due."""
    if not isinstance(stored, str):
        return 0.0
    try:
        refreshed = dt.datetime.fromisoformat(stored.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if refreshed.tzinfo is None:
        return 0.0
    return max(0.0, min(every, (refreshed - now).total_seconds() + every))


def first_wait(worker: DeviceWorker, store: Store, every: float, now: dt.datetime) -> float:
    """Seconds until `worker`'s terminal's roster is first due (its stored date, read with
    every terminal's meta at start-up, or from the buffer)."""
    if worker.stored_roster is not None:
        wait = refresh_due_in(worker.stored_roster.get("refreshed_at"), every, now)
        worker.stored_roster = None
        return wait
    return first_refresh_in(store, worker.name, every, now)


class RosterRefresher:
    """Queues a roster read on each worker once its stored roster is `refresh_hours` old (at
    once when none is stored), then every `refresh_hours` (sooner after a failure); one at a
    time per terminal: the next is queued only once the last has run. A terminal whose driver
    cannot list users drops out.

    One task and a heap of due times for the whole fleet, not a sleeping task per terminal:
    5,000 of those held about 1.5 KB each, for a read once a day (issue 18)."""

    def __init__(self, store: Store, settings: RosterSettings) -> None:
        self.store = store
        self.every = settings.refresh_hours * 3600
        self._due: list[tuple[float, int, DeviceWorker]] = []  # (loop time, tie-break, worker)
        self._order = 0
        self._changed = asyncio.Event()

    def add(self, worker: DeviceWorker, wait: float) -> None:
        self._order += 1
        heapq.heappush(self._due, (asyncio.get_running_loop().time() + wait, self._order, worker))
        self._changed.set()

    async def run(self, workers: Sequence[DeviceWorker]) -> None:
        if self.every <= 0:
            return
        now = dt.datetime.now(dt.UTC)
        for worker in workers:
            if worker.stored_roster is not None:  # read with every terminal's meta at start-up
                self.add(worker, first_wait(worker, self.store, self.every, now))
            else:  # a buffer read: off the event loop
                self.add(worker, await asyncio.to_thread(first_wait, worker, self.store, self.every, now))
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            while self._due and self._due[0][0] <= loop.time():
                self._submit(heapq.heappop(self._due)[2])
            wait = self._due[0][0] - loop.time() if self._due else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    def _submit(self, worker: DeviceWorker) -> None:
        job = RosterJob(self.store)
        worker.submit(job)
        job.done.add_done_callback(lambda done: self._ran(worker, done))

    def _ran(self, worker: DeviceWorker, done: asyncio.Future[int]) -> None:
        if done.cancelled():
            return  # the worker is stopping
        exc = done.exception()
        if isinstance(exc, CommandUnsupportedError):
            log.info("roster_unsupported", device=worker.name, reason=str(exc))
        elif exc is not None:
            # A failed contact ends the worker's session and it reconnects; the roster waits.
            log.warning("roster_refresh_failed", device=worker.name, error=str(exc))
            self.add(worker, min(self.every, RETRY_SECONDS))
        else:
            self.add(worker, self.every)
