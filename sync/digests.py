"""Reconciliation digests (docs/mqtt-contract.md, "Reconciliation digests").

For each terminal the gateway publishes, retained on `{base}/devices/{device}/digests`, what its
buffer holds per terminal-local day over a window of recent days: the number of punches and a
digest of their ids (`contract.day_digest`). A central system compares them with what it stored
and finds a gap without trusting the broker, the gateway's delivery marks or anything else. It
works in either delivery mode.

Invariants:

* The window covers only days the buffer still holds completely: a delivered punch is purged
  `buffer.retention_days` after its delivery, which is never before its own local day, so days
  from `retention_days - 2` days ago (UTC, with a day's margin for time zones) to tomorrow are
  whole. It is capped at MAX_WINDOW_DAYS so a message stays small. With a retention below two
  days there is no whole day to show, and nothing is published.
* Published on change, rate-limited: new punches mark their terminal's local days dirty (read
  by pk, so each new row is looked at once); a terminal is published again at most every
  `mqtt.digest_interval` seconds, and every terminal when the window moves (a new day). A tick
  spends at most `TICK_BUDGET_SECONDS` on messages; the terminals still due go out in the
  next ticks, the longest unpublished first.
* Only the days that changed are recomputed, from the buffer (never from a running sum that
  could drift); a published message always lists every day of the window that has a punch.
  A stop keeps each up-to-date terminal's days in the buffer (`kept`, device meta
  `<device>/digests`, with the window and the pk looked at up to); the next start takes them
  back for the same window and recomputes only the days of punches stored past that pk.
* Between messages a terminal's days are kept packed, 40 bytes a day in one bytes object per
  terminal (`_pack`), not as payload models: a pydantic `DigestDay` (its dict, its fields-set,
  two strings) is about 700 bytes, and a window of days for each of thousands of terminals is
  held all the time. A message is the envelope written by the model with the kept days written
  as its `days` entries (`entry_json`), byte for byte what the model writes from the days'
  models (and about 30 models cheaper to build).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from punchgate.sync.buffer_devices import DIGESTS_SUFFIX
from punchgate.sync.contract import DeviceDigests, DigestDay, day_digest
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.settings import BufferSettings, MqttSettings
from punchgate.sync.store import Store

log = structlog.get_logger(__name__)

MAX_WINDOW_DAYS = 92
TICK_SECONDS = 5.0  # how often new punches are looked for (at most; see DigestPublisher)
# CPU a tick may spend on messages before the terminals still due wait for the next tick. A
# first start's first tick (and a new day's) computes every day of every terminal: 1.5 ms a
# terminal, 7.5 s in one thread at 5,000 terminals, in the very interval the fleet's first
# polls must be on time in. A steady tick (today changed, 0.4 ms a message) stays far below
# it. 0.2 s every 5 s is at most 4 % of a core: every day of 5,000 terminals then takes about
# three minutes; a restart, which takes back the days its stop kept (`_restore`), about 15 s.
TICK_BUDGET_SECONDS = 0.2
# A stop keeps each terminal's days in its device meta under this key (`<device>/digests`), so
# the next start recomputes only what changed since instead of every day of every terminal.
KEEP_SUFFIX = DIGESTS_SUFFIX


class DigestConfig(Protocol):
    @property
    def gateway_id(self) -> str: ...

    @property
    def mqtt(self) -> MqttSettings: ...

    @property
    def buffer(self) -> BufferSettings: ...


def window(today: dt.date, retention_days: int) -> tuple[dt.date, dt.date] | None:
    """(first, last) local day covered on UTC day `today`, or None when the retention keeps no
    whole day."""
    if retention_days < 2:
        return None
    span = min(retention_days - 2, MAX_WINDOW_DAYS - 2)
    return today - dt.timedelta(days=span), today + dt.timedelta(days=1)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class DigestPublisher:
    """Computes and publishes every terminal's digests; `await run()` in a task, cancel to stop."""

    def __init__(
        self,
        settings: DigestConfig,
        store: Store,
        forwarder: Forwarder,
        devices: Sequence[str],
        *,
        today: Callable[[], dt.date] = _utc_today,
    ) -> None:
        self.settings = settings
        self.store = store
        self.forwarder = forwarder
        self.interval = settings.mqtt.digest_interval
        self._today = today
        self._after = 0  # pks up to here have been looked at
        # device -> its days changed since its last message; due for one when listed here
        self._dirty: dict[str, set[dt.date]] = {device: set() for device in devices}
        # Those whose every day of the window is to be computed again (a first tick, a new day),
        # listed rather than holding a set of every day each: 88 dates a terminal held 40 MB
        # for 5,000 terminals at every start, for the minutes their first pass takes.
        self._whole: set[str] = set()
        # device -> the window's days with punches, packed (`_pack`): day, count, digest
        self._days: dict[str, bytes] = {}
        self._sent_at: dict[str, float] = {}
        self._window: tuple[dt.date, dt.date] | None = None
        self.published = 0  # messages handed to the forwarder
        self.budget = TICK_BUDGET_SECONDS
        # The forwarder forgets a digest once sent (`publish_retained(keep=False)`): after every
        # connect each terminal's message is written again from the kept days, not held twice.
        self._resend = False
        forwarder.on_connection_change.append(self._on_connection)
        self._lock = threading.Lock()  # `tick` and `kept` run in threads of their own

    def _on_connection(self, connected: bool, _reason: str) -> None:
        if connected:
            self._resend = True  # read by the next tick (a bool: safe across the thread)

    async def run(self) -> None:
        if window(self._today(), self.settings.buffer.retention_days) is None:
            log.info("digests_off", reason="buffer.retention_days below 2 keeps no whole day")
            return
        tick = min(TICK_SECONDS, self.interval)
        while True:
            # Computed in a thread (buffer reads), handed to the forwarder on the event loop.
            for topic, payload in await asyncio.to_thread(self.tick):
                self.forwarder.publish_retained(topic, payload, keep=False)
                self.published += 1
            await asyncio.sleep(tick)

    def tick(self) -> list[tuple[str, bytes]]:
        """Note new punches, move the window at a new day; the messages of the terminals due."""
        with self._lock:
            return self._tick()

    def _tick(self) -> list[tuple[str, bytes]]:
        current = window(self._today(), self.settings.buffer.retention_days)
        if current is None:
            return []
        if current != self._window:
            # The first tick, or a new day: every day of every terminal is (re)computed, but for
            # those whose days the last stop kept for this window (`_restore`).
            restored: set[str] = set()
            if self._window is None:
                self._after = self.store.max_pk()
                restored = self._restore(current)
            self._window = current
            for device in {*self._dirty, *self._days}:
                self._dirty.setdefault(device, set())
                if device not in restored:
                    self._whole.add(device)
                self._sent_at.pop(device, None)
        if self._resend:
            self._resend = False
            for device in self._days:  # nothing to recompute: the message again, from its days
                self._dirty.setdefault(device, set())
                self._sent_at.pop(device, None)
        changed, self._after = self.store.days_stored_since(self._after)
        for device, days in changed.items():
            for day in days:
                try:
                    self._dirty.setdefault(device, set()).add(dt.date.fromisoformat(day))
                except (TypeError, ValueError):
                    continue  # a record without a readable local time: in no day
        now = time.monotonic()
        due: list[tuple[str, bytes]] = []
        # Longest unpublished first (never published: first of all), so that a tick cut short
        # by the budget leaves the others for the next ticks in turn.
        for device in sorted(self._dirty, key=lambda d: (self._sent_at.get(d, -1e18), d)):
            if due and time.monotonic() - now >= self.budget:
                break
            if now - self._sent_at.get(device, -1e18) < self.interval:
                continue
            due.append((self.forwarder.topics.device_digests(device), self._message(device, current)))
            self._sent_at[device] = now
        return due

    def kept(self) -> dict[str, dict[str, Any]]:
        """What a stop keeps for the next start, by device meta key: the days of each terminal
        whose days are up to date, with the window they cover and the pk up to which punches
        were looked at. Call from a thread: it waits for a tick in progress."""
        with self._lock:
            if self._window is None:
                return {}
            first, last = self._window
            covered = f"{first.isoformat()}/{last.isoformat()}"
            return {
                device + KEEP_SUFFIX: {"window": covered, "after": self._after, "days": packed.hex()}
                for device, packed in self._days.items()
                if device not in self._whole and not self._dirty.get(device)
            }

    def _restore(self, current: tuple[dt.date, dt.date]) -> set[str]:
        """The days the last stop kept (`kept`) for this same window, for the configured
        terminals: a restart then recomputes only the days of punches stored since (rows with
        a pk past the kept one), instead of every day of every terminal (7.5 s of CPU at 5,000
        terminals). Each terminal's message still goes out again after the connect. Kept days
        stay right: rows are only ever added past the highest pk, and the purge removes only
        days older than any window (module docstring)."""
        first, last = current
        covered = f"{first.isoformat()}/{last.isoformat()}"
        restored: set[str] = set()
        after = self._after
        for key, kept in self.store.device_metas_ending(KEEP_SUFFIX).items():
            device = key[: -len(KEEP_SUFFIX)]
            looked, days = kept.get("after"), kept.get("days")
            if device not in self._dirty or kept.get("window") != covered:
                continue
            if not (isinstance(looked, int) and 0 <= looked <= self._after and isinstance(days, str)):
                continue
            try:
                packed = bytes.fromhex(days)
            except ValueError:
                continue
            if len(packed) % _DAY.size:
                continue
            self._days[device] = packed
            restored.add(device)
            after = min(after, looked)
        self._after = after  # what was stored since the earliest kept look is looked at again
        if restored:
            log.info("digests_restored", terminals=len(restored), after=after)
        return restored

    def _message(self, device: str, covered: tuple[dt.date, dt.date]) -> bytes:
        first, last = covered
        days = _unpack(self._days.get(device, b""))
        changed = self._dirty.pop(device)
        if device in self._whole:
            self._whole.discard(device)
            changed = set(_days(first, last))
        dirty = {day for day in changed if first <= day <= last}
        stored = self.store.days_ids(device, dirty)  # one query for every changed day
        for day in dirty:
            ids = stored.get(day)
            if ids:
                days[day.toordinal()] = (len(set(ids)), bytes.fromhex(day_digest(ids)))
            else:
                days.pop(day.toordinal(), None)
        days = {o: kept for o, kept in days.items() if first.toordinal() <= o <= last.toordinal()}
        self._days[device] = _pack(days)
        envelope = {
            "schema": "punchgate.digests",
            "version": 1,
            "scheme": 1,
            "gateway": self.settings.gateway_id,
            "device": device,
            "as_of": dt.datetime.now(dt.UTC),
            "first_day": first.isoformat(),
            "last_day": last.isoformat(),
        }
        kept = [entry_json(o, count, digest) for o, (count, digest) in sorted(days.items())]
        empty = DeviceDigests.model_validate({**envelope, "days": []}).model_dump_json(by_alias=True).encode()
        if empty.endswith(_NO_DAYS):  # `days` is the last field: the kept entries go in its list
            return empty[: -len(_NO_DAYS)] + b'"days":[' + b",".join(kept) + b"]}"
        days_models = [DigestDay.model_validate_json(entry) for entry in kept]  # fields reordered
        message = DeviceDigests.model_validate({**envelope, "days": days_models})
        return message.model_dump_json(by_alias=True).encode()


# A kept day: its date's ordinal, its count, its digest's 32 bytes. A terminal's days are one
# bytes object of these, sorted: a day of a dict (a date, a bytes entry, the dict's slot) held
# about 250 bytes, and a 90-day window of every terminal of a large site is held all the time.
_DAY = struct.Struct("<II32s")


def _pack(days: dict[int, tuple[int, bytes]]) -> bytes:
    return b"".join(_DAY.pack(o, count, digest) for o, (count, digest) in sorted(days.items()))


def _unpack(packed: bytes) -> dict[int, tuple[int, bytes]]:
    return {o: (count, digest) for o, count, digest in _DAY.iter_unpack(packed)}


def entry_json(ordinal: int, count: int, digest: bytes) -> bytes:
    """A day's entry of the message's `days`, byte for byte as the payload model writes it
    (`DigestDay.model_dump_json`; tests/confirm/test_digests_kept.py holds them equal)."""
    day = dt.date.fromordinal(ordinal).isoformat()
    return b'{"day":"%s","count":%d,"digest":"%s"}' % (day.encode(), count, digest.hex().encode())


_NO_DAYS = b'"days":[]}'
