"""One task per terminal: the only owner of its connection.

A session is: connect, ask the terminal who it is (serial, clock, counts), read the log and
commit every new punch durably, then either listen for live punches or wait for the next
poll — reconciling with a full read, after a (re)connect or a restart as at any poll, whenever
the terminal's record count is not what the last full read and the live stream account for
(and at least every `full_read_every` seconds whatever it says, a restart in between
or not: the known log is kept in the device meta). After a (re)connect or a restart a count
that agrees is not enough: the last record stored must still be at its place in the log, the
same bytes, or the log is read in full (`_log_end_unchanged`). A full read normalises only the
records after the part of the log the previous read stored (`KnownLog`); a poll that finds
nothing to read is the contact alone, and writes nothing to the buffer.

Polls fall due on the worker's own timer, on a grid of `poll_interval` with a phase of its own
(`phase`); the first contact after start-up waits `first_poll_in`, so a fleet started together
does not read together. `poll_lag` is measured from the moment a poll fell due.
Failures stay here: they are reported to the health model, and the worker backs off with
jitter and tries again. One bad terminal never stops another, and none holds its worker for
ever: every driver call runs under the worker's own deadline (`_bounded`), on top of the
driver's, which no claim of the terminal can lift.

The parts live beside it, each in a module of its own: the call deadlines (`worker_deadline`),
what the log already holds and when a poll must read it (`worker_known_log`), the fleet's bound
on full reads (`worker_read_limit`), normalising and committing punches (`worker_commit`), and
retry delays and failure log lines (`worker_failures`). `DeviceWorker` composes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import structlog

from punchgate.drivers.base import DeviceInfo, Driver, DriverError, RawPunch, TailOutcome, record_chunks
from punchgate.drivers.config import TerminalConfig
from punchgate.drivers.faults import DeviceFault
from punchgate.gateway.clock import ClockCare
from punchgate.gateway.commit_group import DirectCommit, PunchWriter
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.logs import bind_device
from punchgate.gateway.worker_clock import correct_if_due, drift_seconds
from punchgate.gateway.worker_commit import HeldNotice, commit_punches, normalise
from punchgate.gateway.worker_deadline import (
    bounded,
    plain_call_limit,
    read_allowance,
)
from punchgate.gateway.worker_failures import Backoff, FailureLog
from punchgate.gateway.worker_known_log import (
    DIGEST_VERSION,
    KNOWN_LOG_KEY,
    RECONCILE_POLLS,
    KnownLog,
    LogHasher,
    LogIntake,
    polls_since,
    why_read,
)
from punchgate.gateway.worker_read_limit import (
    FULL_READ_RECORDS,
    FULL_READ_SLOTS,
    full_read_limiter,
)
from punchgate.gateway.worker_schedule import Flag, PollGrid, wait_any
from punchgate.gateway.worker_tail import (
    TAIL_PAUSE_POLLS,
    reads_tails,
    reads_tails_with_contact,
    tail_first,
    take_tail,
)
from punchgate.sync.buffer_devices import meta_text
from punchgate.sync.records import Punch, Source
from punchgate.sync.store import Store, StoreRefusedError

__all__ = ["DeviceWorker", "PunchSink", "RemoteCommand"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

POLL_LAGS_KEPT = 64
# At a factory's rate every poll reads a few new records; writing the device meta (an fsynced
# commit) after each would double the polls' commits. Tail reads and count-only polls write it
# at most this often (whole reads always do).
META_LAZY_SECONDS = 300.0
# A full read stores what the driver hands over in slices of at most this many records. A ZK
# part is up to 1,636 records; each is a Punch and a row (about 1 kB together) plus the dirty
# pages of its insert until the commit, and a first start imports ten such reads at once: in
# slices of 400 its peak fell from about 170 MiB to 135 (bench/notes.md, stop 31).
FULL_READ_SLICE = 400


class PunchSink(Protocol):
    def notify_new_punches(self) -> None: ...


class RemoteCommand(Protocol):
    """A remote command for this terminal (gateway/commands), run by the worker's own task."""

    async def run(self, worker: DeviceWorker) -> bool:
        """Do it; True when the session must end (the terminal restarts). A DriverError it lets
        out ends the session like any failed contact."""
        ...


class DeviceWorker:
    # Slots: with more attributes than CPython shares dict keys for (30), each worker held a
    # dict of its own, 1.6 KB of a fleet's per-terminal memory (issue 18).
    __slots__ = (
        "_capacity",
        "_command_ready",
        "_commands",
        "_grid",
        "_known",
        "_last_count",
        "_live_since_read",
        "_meta_at",
        "_meta_serial",
        "_meta_text",
        "_plain_limit",
        "_poll_due",
        "_polls_since_read",
        "_read_at",
        "_serial",
        "_tails_paused",
        "backoff",
        "clear_log",
        "clock",
        "clock_care",
        "commits",
        "driver",
        "driver_type",
        "failure_log",
        "full_reads",
        "health",
        "name",
        "poll_lags",
        "polls_counted",
        "reconcile_polls",
        "sink",
        "store",
        "stored_meta",
        "stored_roster",
        "tail_reads",
        "terminal",
        "zone",
    )

    def __init__(
        self,
        *,
        terminal: TerminalConfig,
        driver: Driver,
        store: Store,
        sink: PunchSink,
        health: DeviceHealth,
        timezone: str,
        driver_type: str,
        clear_log: bool = False,
        backoff: Backoff | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        clock_care: ClockCare | None = None,
        first_poll_in: float = 0.0,
        phase: float | None = None,
        reconcile_polls: int = RECONCILE_POLLS,
        commits: PunchWriter | None = None,
    ) -> None:
        """`first_poll_in`: seconds from `run()` to the first contact. Polls then fall due at
        `phase` (default: `first_poll_in`) + k × `poll_interval` after `run()`, the first of
        them at least half an interval after the first contact. `reconcile_polls`: at least
        every that many polls read the whole log, whatever the record count says. `commits`: how
        polled and live punches are stored (`commit_group.CommitGroup`, shared by the fleet's
        workers; default: a commit of their own, the forwarder told at once)."""
        self.terminal = terminal
        self.name = terminal.name
        self._plain_limit = plain_call_limit(terminal)
        self.driver = driver
        self.store = store
        self.sink = sink
        self.commits = commits or DirectCommit(store, sink)
        self.health = health
        self.zone = ZoneInfo(timezone)
        self.driver_type = driver_type
        self.clear_log = clear_log
        self.backoff = backoff or Backoff(1.0, min(60.0, max(5.0, terminal.poll_interval)))
        self.clock = clock
        self.clock_care = clock_care
        self._grid = PollGrid(interval=terminal.poll_interval, first_poll_in=first_poll_in, phase=phase)
        self._poll_due = self._grid.due
        self._serial = ""
        self._capacity: int | None = None  # the log's, from the last contact (call deadlines)
        self._last_count: int | None = None
        # Seconds between a poll falling due and its start, the latest only (trimmed to
        # POLL_LAGS_KEPT): kept whole, about 100 KB a terminal a day at 30 s polls. A list,
        # not a deque: an empty deque takes 760 bytes, per terminal.
        self.poll_lags: list[float] = []
        self.reconcile_polls = reconcile_polls
        # What the buffer holds of the log; kept in the device meta too, so a restart trusts
        # the count as a running gateway does (`_restore_known`).
        self._known: KnownLog | None = None
        self._read_at = 0.0  # unix seconds of the last whole-log read (kept with `_known`)
        self._live_since_read = 0  # live punches committed since the last full read
        self._polls_since_read = 0  # polls answered from the count since the last full read
        # What the buffer remembers about the terminal, as the buffer holds it (its JSON text:
        # one string, not the parsed meta's twenty-odd objects, times every terminal), and its
        # serial number.
        self._meta_text = meta_text({})
        self._meta_serial = ""
        # Read with every terminal's at start-up (`app_terminals`), else by `run()`; the stored
        # roster's `refreshed_at` likewise for gateway/roster.py. Dropped once used.
        self.stored_meta: dict[str, Any] | None = None
        self.stored_roster: dict[str, Any] | None = None
        self._meta_at = -math.inf  # time.monotonic() of the last write of `_meta`
        self.full_reads = 0
        self.polls_counted = 0  # polls that found nothing to read
        self.tail_reads = 0  # polls that read only what the log added (`worker_tail`)
        self._tails_paused = 0  # polls left that read whole after a tail read failed
        self.failure_log = FailureLog()
        # Remote commands wait here until the worker is between operations and connected.
        self._commands: list[RemoteCommand] = []  # rare: a list is 700 bytes less than a deque
        self._command_ready = Flag()

    # --- scheduling ----------------------------------------------------------------------
    async def poll_due(self) -> None:
        """The scheduler's job. A coroutine on purpose: APScheduler runs plain functions in a
        thread pool, and asyncio.Event.set() from another thread may never wake the worker."""
        self.request_poll()

    def request_poll(self) -> None:
        """A periodic reconcile falls due (call on the event loop)."""
        self._grid.request()

    def place_on_grid(self, *, phase: float, first_poll_in: float) -> None:
        """Where this worker's polls fall within the interval, and when its first contact
        comes (before `run()`)."""
        self._grid.phase = phase
        self._grid.first_poll_in = first_poll_in

    # --- remote commands (gateway/commands) ---------------------------------------------------
    def submit(self, command: RemoteCommand) -> None:
        """Queue a remote command: it runs in this task, in order, between reads, once connected
        (call on the event loop)."""
        self._commands.append(command)
        self._command_ready.set()

    async def _run_commands(self) -> bool:
        """Run the queued remote commands; True when one ended the session."""
        while self._commands:
            if await self._commands.pop(0).run(self):
                return True
        return False

    async def call(self, what: str, call: Awaitable[T]) -> T:
        """One driver call of a remote command, under the worker's deadline."""
        return await self._bounded(what, call)

    async def contact(self) -> DeviceInfo:
        """A remote command's contact: who the terminal is now (health and clock care included)."""
        return await self._contact()

    async def reconcile(self, info: DeviceInfo) -> None:
        """A remote command's full read: read, commit, and clear where the config says so."""
        await self._full_read(info, historical=True)

    async def run(self) -> None:
        with bind_device(self.name):
            log.info("worker_started", type=self.driver_type)
            meta = self.stored_meta
            self.stored_meta = None
            if meta is None:
                meta = await asyncio.to_thread(self.store.get_device_meta, self.name)
            self._restore_meta(meta)
            # This frame lives as long as the worker: a parsed meta kept in it held about
            # 0.7 KB a terminal for nothing (3.7 MiB at 5,000 terminals).
            del meta
            self._grid.start()
            try:
                await self._poll_due.wait()  # the first contact waits for its turn (start-up spread)
                await self._sessions()
            finally:
                self._grid.stop()

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self._serial = str(meta.get("serial_number", ""))
        self._last_count = meta.get("record_count")
        self._meta_text, self._meta_serial = meta_text(meta), self._serial
        self._restore_known(meta)

    def _restore_known(self, meta: dict[str, Any]) -> None:
        """What the buffer held of the log when the gateway last stopped: the first poll after
        a restart is then answered by the count when nothing changed, instead of reading every
        log in full. The bound on reads the count cannot justify runs on across the restart:
        the polls the last whole-log read is old count towards it (`polls_since`)."""
        restored = KnownLog.from_meta(meta.get(KNOWN_LOG_KEY))
        if restored is None:
            return
        self._known, self._read_at = restored
        self._meta_at = time.monotonic()  # just read: as fresh as if written now (`_remember`)
        self._polls_since_read = polls_since(
            self._read_at, self.clock().timestamp(), self.terminal.poll_interval
        )
        last_punch = meta.get(KNOWN_LOG_KEY, {}).get("last_punch_at")
        if isinstance(last_punch, int | float):  # when the terminal was last used, for health
            self.health.punches_stored(dt.datetime.fromtimestamp(last_punch, dt.UTC))

    async def _sessions(self) -> None:
        """One session after another, for ever: a failed one is reported and retried."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except StoreRefusedError as exc:
                # The terminal keeps its records; we read them once the buffer drains.
                log.warning("store_refused_stop_reading", fault=exc.fault, error=str(exc))
                await self._sleep(self.terminal.poll_interval)
                continue
            except DriverError as exc:
                _stop_if_cancelled()
                self.health.contact_failed(exc.fault, str(exc))
                self.failure_log.failed(exc.fault, str(exc))
            except Exception as exc:  # a bug in one worker must not take down the daemon
                _stop_if_cancelled()
                self.health.contact_failed(DeviceFault.PROTOCOL_ERROR, f"{type(exc).__name__}: {exc}")
                log.exception("session_crashed")
            finally:
                await self._close_quietly()
            await self._sleep(self.backoff.next_delay())

    async def _sleep(self, seconds: float) -> None:
        self._poll_due.clear()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the worker would then outlive its shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._poll_due.wait()

    async def _close_quietly(self) -> None:
        try:
            await asyncio.shield(self._bounded("close", self.driver.close()))
        except Exception as exc:
            log.debug("close_failed", error=str(exc))

    # --- one session ---------------------------------------------------------------------
    # --- the worker's own deadline around every driver call ------------------------------
    def _read_limit(self, capacity: int | None) -> float:
        """Seconds a read of a log of that `capacity` may take (`_plain_limit`, the terminal's
        config's, is worked out once: asking a config for a key its type lacks goes through
        pydantic's `__getattr__`, an exception built and dropped, which at every call of every
        terminal was 3 % of a 5,000-terminal daemon's samples)."""
        return self._plain_limit + read_allowance(capacity)

    async def _bounded(self, what: str, call: Awaitable[T], limit: float | None = None) -> T:
        """Await one driver call under the worker's deadline; DriverTimeoutError when it passes."""
        seconds = self._plain_limit if limit is None else limit
        return await bounded(self.name, what, call, seconds)

    async def _session(self) -> None:
        await self._bounded("connect", self.driver.connect())
        # After every (re)connect the log is reconciled: read in full unless the count says
        # what the buffer holds (`why_read`: the same rules and bound as any poll) *and* the
        # last record stored is still at its place in the log (`_log_end_unchanged`; where
        # the driver can, read in the contact's own call).
        await self._contact_and_poll(reconnected=True)
        self.backoff.reset()
        self.failure_log.succeeded()
        wants_live = bool(getattr(self.terminal, "live", False))
        while True:
            if await self._run_commands():
                return  # a command restarted the terminal: connect again
            live = self.driver.live() if wants_live else None
            if live is not None:
                await self._listen(live)
            else:
                await self._wait_for_poll()
            if self._commands and not self._poll_due.is_set():
                continue  # woken for remote commands only: no read
            await self._contact_and_poll()

    async def _contact_and_poll(self, *, reconnected: bool = False) -> None:
        # A call of its own: `_session`'s frame lives as long as the connection, and the
        # contact's answer and tail records kept in it between polls cost about 0.6 KB a
        # terminal.
        info, tail = await self._contact_reading_tail(reconnected=reconnected)
        await self._poll(info, reconnected=reconnected, tail=tail)

    async def _wait_for_poll(self) -> None:
        # The scheduler says when a poll is due (request_poll). A poll that fell due while the
        # previous read ran is served at once rather than cleared away (that cost a whole
        # interval of lag). The timeout is only a safety net should no scheduler call us; it is
        # long enough never to add reads of its own between the scheduler's.
        if self._poll_due.is_set() or self._commands:
            return
        self._command_ready.clear()
        # One future and one timer (`wait_any`), not a task for each flag: most workers are
        # waiting here at any moment.
        await wait_any((self._poll_due, self._command_ready), 2 * self.terminal.poll_interval)

    async def _listen(self, live: AsyncGenerator[RawPunch | None, None]) -> None:
        """Commit live punches one by one until a poll falls due (then return to reconcile).

        The stream is closed before any other command goes to the terminal: ZK terminals
        push events at any time while registered, which would interleave with replies.
        """
        try:
            while True:
                try:
                    raw = await self._bounded("live", anext(live))
                except StopAsyncIteration:
                    return
                if raw is not None:  # None is an idle tick: lets us notice a due poll
                    await self._commit([raw], source="live", historical=False)
                    self._live_since_read += 1  # the terminal's count grew by one
                if self._poll_due.is_set() or self._commands:
                    return
        finally:
            await self._bounded("stop live", live.aclose())

    async def _contact_reading_tail(
        self, *, reconnected: bool = False
    ) -> tuple[DeviceInfo, TailOutcome | None]:
        """A poll's contact; where the driver can, with the tail read the poll would make next
        in the same driver call (`worker_tail.ContactTailReader`): decided from the contact's
        answer by the same rules as `_poll` (a count that grew and nothing else to explain it,
        no whole read due), so what the call reads is what `_poll` would have read. After a
        (re)connect whose count agrees, that is the read of the last record stored
        (`_log_end_unchanged`): at a restart, one thread hop and one round trip fewer for
        every terminal, in the busiest interval there is."""
        known = self._known
        driver = self.driver
        if (
            known is None
            or not known.anchor
            or self._tails_paused
            or self._whole_read_due()
            or not reads_tails_with_contact(driver)
        ):
            return await self._contact(), None
        live, polls, every = self._live_since_read, self._polls_since_read, self.reconcile_polls
        serial = self._serial

        def tail_from(info: DeviceInfo) -> int | None:  # runs in the driver's thread: no state
            if serial and info.serial_number != serial:
                return None  # another terminal: its log is read whole (`_check_identity`)
            why = why_read(info, known, live_since_read=live, polls_since_read=polls, reconcile_polls=every)
            if why == "count_changed":
                return tail_first(info, known, driver)
            if why is None and reconnected and known.count:
                return known.count - 1  # the log-end check
            return None

        call = driver.info_then_tail(tail_from, len(known.anchor), first_hint=known.count - 1)
        limit = self._read_limit(self._capacity)
        info, tail = await self._bounded("info", call, limit)
        return await self._contact(info), tail

    async def _contact(self, answered: DeviceInfo | None = None) -> DeviceInfo:
        """Ask who the terminal is (unless `answered` already); measure (and maybe correct) its
        clock; report to health.

        The health model judges the clock (clock_drift, clock_invalid), the counts and the
        enabled flag; the worker only measures.
        """
        info = answered if answered is not None else await self._bounded("info", self.driver.info())
        self._capacity = info.record_capacity
        drift = drift_seconds(info, self.zone, self.clock())
        if self.clock_care is not None:
            info, drift = await correct_if_due(
                self.clock_care,
                info,
                drift,
                zone=self.zone,
                clock=self.clock,
                health=self.health,
                set_time=lambda when: self._bounded("set time", self.driver.set_time(when)),
                read_info=lambda: self._bounded("info", self.driver.info()),
            )
        self._check_identity(info)
        self.health.contact_ok(info, drift_seconds=drift)
        return info

    def _check_identity(self, info: DeviceInfo) -> None:
        replaced = bool(self._serial and info.serial_number and info.serial_number != self._serial)
        self.health.set_fault(
            DeviceFault.DEVICE_REPLACED,
            replaced,
            f"serial number changed from {self._serial} to {info.serial_number}",
        )
        if replaced:
            self._last_count = None  # a new terminal has its own log
            self._known = None
        if info.serial_number:
            self._serial = info.serial_number

    def _why_read(self, info: DeviceInfo) -> str | None:
        """Why this poll must read the whole log; None when the count says nothing is new."""
        return why_read(
            info,
            self._known,
            live_since_read=self._live_since_read,
            polls_since_read=self._polls_since_read,
            reconcile_polls=self.reconcile_polls,
        )

    async def _poll(
        self, info: DeviceInfo, *, reconnected: bool = False, tail: TailOutcome | None = None
    ) -> None:
        """A poll after the contact: a full read when the log may hold something new. `tail`:
        the tail read made with the contact (`_contact_reading_tail`)."""
        why = self._why_read(info)
        if why is None and reconnected and not await self._log_end_unchanged(info, tail):
            why = "reconcile"
        # A grown log is read from its last stored record on, unless the periodic whole read
        # is due (the count changing at every poll must not put that off for ever).
        periodic = self._whole_read_due()
        if self._tails_paused:
            self._tails_paused -= 1
        elif why == "count_changed" and not periodic and await self._read_tail(info, tail):
            return
        if why is not None:
            await self._full_read(info, historical=True, why=why)
            return
        started = time.monotonic()
        self._poll_due.clear()  # this poll serves any that fell due before it
        lag = self._take_lag(started)
        self._check_count(info.record_count)
        self.health.log_in_step()
        self._polls_since_read += 1
        self._last_count = info.record_count
        await self._remember(info.record_count, lazy=True)
        self.polls_counted += 1  # counted once what it remembers is written: a restart reads it
        log.info("poll_counted", records=info.record_count, **lag)

    def _whole_read_due(self) -> bool:
        """This poll is the one the periodic whole read falls on (`reconcile_polls`)."""
        return self._polls_since_read + 1 >= self.reconcile_polls

    async def _log_end_unchanged(self, info: DeviceInfo, done: TailOutcome | None = None) -> bool:
        """After a (re)connect or a restart, whose count agrees with the buffer: is the last
        record stored still the record at its place in the log, the same bytes? A log cleared
        and refilled to the same count while the connection was down fails this and is read
        in full at once, not only at the periodic bound. False (read whole) whenever it cannot
        be checked: no known log with its last record's bytes, a driver without offset reads.
        `done`: that read, made with the contact (`_contact_reading_tail`)."""
        known = self._known
        if known is None or not known.anchor or not known.count or self._tails_paused:
            return False
        if not reads_tails(self.driver):
            return False
        if done is not None and done.first == known.count - 1:
            if done.failed is not None:  # as a failed read of its own (`_read_from`)
                self._tails_paused = TAIL_PAUSE_POLLS
                raise done.failed
            raws = done.records
        else:
            raws = await self._read_from(known.count - 1, known, info, "check the log's end")
        unchanged = raws is not None and len(raws) > 0 and raws[0].raw == known.anchor
        if not unchanged:
            log.info("log_end_changed", records=info.record_count, known=known.count)
        return unchanged

    async def _read_from(
        self, first: int, known: KnownLog, info: DeviceInfo, what: str
    ) -> list[RawPunch] | None:
        """The log's records from index `first` on, by the driver's offset read (records the
        size of the stored ones). A driver error pauses offset reads: the next
        TAIL_PAUSE_POLLS polls read whole, so a terminal that never answers a READ_BUFFER from
        an offset cannot fail every poll for ever."""
        assert reads_tails(self.driver)
        read = self.driver.read_records_from(first, len(known.anchor))
        try:
            return await self._bounded(what, read, self._read_limit(info.record_capacity))
        except DriverError:
            self._tails_paused = TAIL_PAUSE_POLLS
            raise

    async def _read_tail(self, info: DeviceInfo, done: TailOutcome | None = None) -> bool:
        """Read only what the log added since the records stored (`worker_tail`), unless the
        contact read it already (`done`); False when a whole read must decide instead."""
        known = self._known
        first = tail_first(info, known, self.driver)
        if first is None or known is None:
            return False
        started = time.monotonic()
        if done is not None and done.first == first:
            if done.failed is not None:  # as a failed read of its own (`_read_from`)
                self._tails_paused = TAIL_PAUSE_POLLS
                raise done.failed
            raws = done.records
        else:
            raws = await self._read_from(first, known, info, "read new records")
        tail = take_tail(raws, known)
        if tail is None:
            log.info("tail_read_refused", records=info.record_count, known=known.count)
            return False
        self._poll_due.clear()  # this read serves any poll that fell due before it
        lag = self._take_lag(started)
        self._check_count(tail.known.count)
        new = await self._commit(tail.new, source="poll", historical=True)
        self._known = tail.known
        self._last_count = tail.known.count
        self._live_since_read = 0
        self._polls_since_read += 1  # the periodic whole read still comes (`why_read`)
        self.health.read_done(count=tail.known.count, new=new)
        await self._remember(tail.known.count, lazy=True)
        self.tail_reads += 1  # counted once what it remembers is written: a restart reads it
        log.info(
            "tail_read",
            records=tail.known.count,
            read=len(tail.new),
            new=new,
            seconds=round(time.monotonic() - started, 3),
            **lag,
        )
        return True

    def _take_lag(self, started: float) -> dict[str, float]:
        """The lag of the poll that starts now, if one fell due (for the log line)."""
        poll_lag = self._grid.take_lag(started)
        if poll_lag is None:
            return {}
        self.poll_lags.append(poll_lag)
        if len(self.poll_lags) > 2 * POLL_LAGS_KEPT:
            del self.poll_lags[:-POLL_LAGS_KEPT]
        # poll_lag (scheduled polls only) is how the fleet benchmark sees scheduling delay.
        return {"poll_lag": round(poll_lag, 4)}

    def _check_count(self, count: int | None) -> None:
        reset = self._last_count is not None and count is not None and count < self._last_count
        self.health.set_fault(
            DeviceFault.LOG_RESET,
            reset,
            f"record count went from {self._last_count} to {count} without a clear",
        )

    async def _remember(self, count: int | None, *, lazy: bool = False) -> None:
        """Write what the buffer remembers about the terminal, only when it changed (each write
        is an fsynced commit). `lazy` (a tail read, a poll answered by the count): at most
        every META_LAZY_SECONDS for the same serial. What the meta then holds is an older
        prefix of the log, as good after a restart: its tail read starts from an earlier
        record, and the buffer keeps each record once."""
        if (
            lazy
            and self._meta_serial == self._serial
            and time.monotonic() - self._meta_at < META_LAZY_SECONDS
        ):
            return
        meta, text = self._meta_now(count)
        if text != self._meta_text:
            await asyncio.to_thread(self.store.set_device_meta, self.name, meta)
            self._meta_written(text)

    def _meta_now(self, count: int | None) -> tuple[dict[str, Any], str]:
        """The meta that describes the terminal now, and its text."""
        meta = {**json.loads(self._meta_text), "serial_number": self._serial, "record_count": count}
        meta.pop(KNOWN_LOG_KEY, None)
        if self._known is not None:
            known = self._known.to_meta(self._read_at)
            if self.health.last_punch_at is not None:
                known["last_punch_at"] = round(self.health.last_punch_at.timestamp(), 3)
            meta[KNOWN_LOG_KEY] = known
        return meta, meta_text(meta)

    def _meta_written(self, text: str) -> None:
        self._meta_text, self._meta_serial = text, self._serial
        self._meta_at = time.monotonic()

    def meta_at_stop(self) -> dict[str, Any] | None:
        """The meta to write as the gateway stops, if the lazily written one is behind (None
        when it is not, or nothing is known yet): the stop writes every terminal's in one
        commit (`app_stop`), and the restart goes on from where this run stopped instead of
        reading again up to META_LAZY_SECONDS of every log (20 records a terminal at a shift
        change's rate, 77,000 at 5,000 terminals). Call once the worker has stopped: the known
        log only ever describes records already stored, so a worker stopped mid-read leaves
        an older one, as good."""
        if self._known is None or self._serial == "":
            return None
        meta, text = self._meta_now(self._last_count)
        if text == self._meta_text:
            return None
        self._meta_written(text)
        return meta

    def _hasher_seed(self) -> str:
        encoding = str(getattr(self.terminal, "encoding", ""))
        return f"{DIGEST_VERSION}\x1f{self._serial}\x1f{self.driver_type}\x1f{encoding}"

    def _hasher(self) -> LogHasher:
        return LogHasher(self._hasher_seed())

    async def _full_read(self, info: DeviceInfo, *, historical: bool, why: str = "reconcile") -> None:
        async with full_read_limiter().hold(info.record_count or FULL_READ_RECORDS // FULL_READ_SLOTS):
            await self._full_read_now(info, historical=historical, why=why)

    async def _full_read_now(self, info: DeviceInfo, *, historical: bool, why: str) -> None:
        started = time.monotonic()
        self._poll_due.clear()  # this read serves any poll that fell due before it
        lag = self._take_lag(started)
        self._check_count(info.record_count)
        intake = LogIntake(self._known, self._hasher_seed())
        read = self._read_and_commit(intake, historical=historical)
        new = await self._bounded("read records", read, self._read_limit(info.record_capacity))
        count = intake.count
        self._known = intake.known()
        self._read_at = self.clock().timestamp()
        self._last_count = count
        self._live_since_read = self._polls_since_read = 0
        self.health.read_done(count=count, new=new)
        await self._remember(count)
        self.full_reads += 1  # counted once what it remembers is written: a restart reads it
        log.info(
            "full_read",
            records=count,
            skipped=intake.skipped,
            new=new,
            why=why,
            seconds=round(time.monotonic() - started, 3),
            **lag,
        )
        if self.clear_log and count:
            await self._clear_after_commit(count)

    async def _read_and_commit(self, intake: LogIntake, *, historical: bool) -> int:
        """Read the log and commit it part by part while the rest is still arriving (when the
        driver hands it over in parts): at the end only the last part's work remains. Every
        part is durably stored before the read counts it as stored (`intake.known()`), so a
        read cut short loses nothing and the next one skips what this one stored."""
        new = 0
        held = HeldNotice()
        try:
            async with contextlib.aclosing(record_chunks(self.driver)) as chunks:
                async for chunk in chunks:
                    new += await self._commit_slices(intake, intake.take(chunk), held, historical=historical)
            return new + await self._commit_slices(intake, intake.finish(), held, historical=historical)
        finally:
            if held.due:  # whatever was committed, the read cut short or not
                self.sink.notify_new_punches()

    async def _commit_slices(
        self, intake: LogIntake, raws: Sequence[RawPunch], sink: PunchSink, *, historical: bool
    ) -> int:
        """`raws` stored in order, a commit for each FULL_READ_SLICE of them (one part even
        when there are none: the part also tells the health model what the log's stored prefix
        says, `_commit_part`)."""
        new = 0
        for first in range(0, max(1, len(raws)), FULL_READ_SLICE):
            new += await self._commit_part(
                intake, raws[first : first + FULL_READ_SLICE], sink, historical=historical
            )
        return new

    async def _commit_part(
        self, intake: LogIntake, raws: Sequence[RawPunch], sink: PunchSink, *, historical: bool
    ) -> int:
        if self.health.last_punch_at is None and (newest := intake.newest_skipped()) is not None:
            # Stored before this process started: the newest still says when it was last used.
            (punch,) = self._normalise([newest], source="poll", historical=True)
            self.health.punches_stored(punch.utc_time)
        new = await self._commit(raws, source="poll", historical=historical, sink=sink)
        intake.committed(raws)
        self._known = intake.known()
        return new

    def _normalise(self, raws: Sequence[RawPunch], *, source: Source, historical: bool) -> list[Punch]:
        return normalise(
            raws,
            device=self.name,
            serial_number=self._serial,
            zone=self.zone,
            source=source,
            historical=historical,
            driver_type=self.driver_type,
            now=self.clock(),
        )

    async def _clear_after_commit(self, expected: int) -> None:
        """Clear only what is durably stored: every record read is in the buffer (just committed)."""
        await self._bounded("clear records", self.driver.clear_records(expected))
        self._last_count = 0
        self._known = KnownLog(0, self._hasher().digest())
        await self._remember(0)
        log.info("terminal_log_cleared", records=expected)
        await asyncio.to_thread(
            self.store.audit_action,
            "terminal_log_cleared",
            {"device": self.name, "serial": self._serial, "records": expected},
        )

    async def _commit(
        self, raws: Sequence[RawPunch], *, source: Source, historical: bool, sink: PunchSink | None = None
    ) -> int:
        if not raws:
            return 0
        punches = self._normalise(raws, source=source, historical=historical)
        # A full read's parts (`sink` given) are large already: a commit of their own each.
        writer = self.commits if sink is None else DirectCommit(self.store, sink)
        return await commit_punches(punches, writer=writer, health=self.health, urgent=source == "live")


def _stop_if_cancelled() -> None:
    """Raise CancelledError when this task is being cancelled: an error raised while a
    cancellation unwound (cleanup talking to a terminal that went away) must not turn the
    shutdown into one more failed session to retry."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
