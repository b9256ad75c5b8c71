"""The device health model: per-terminal state derived from what the worker observes.

Workers report what they observe (a contact, a failure, a read, a refusal); this module
decides which faults are active, derives the device state from them, and tells its listeners
about every transition exactly once. Listeners publish (MQTT), count (metrics) and log.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from punchgate.drivers.base import DeviceInfo
from punchgate.drivers.faults import DeviceFault
from punchgate.gateway.calendar import WorkingCalendar
from punchgate.gateway.faults import (
    CATALOGUE,
    Clock,
    DeviceStatus,
    FaultSet,
    Notice,
    Severity,
    utc_now,
)
from punchgate.gateway.settings import HealthSettings

log = structlog.get_logger(__name__)

NoticeListener = Callable[[Notice], None]
ChangeListener = Callable[["DeviceHealth"], None]


_CONTACT_FAULTS = (
    DeviceFault.UNREACHABLE,
    DeviceFault.TIMEOUT,
    DeviceFault.AUTH_FAILED,
    DeviceFault.UNSUPPORTED,
)
# One-off observations, kept visible for `fault_hold_seconds` (see FaultSet).
HELD_FAULTS = frozenset(
    {
        DeviceFault.PROTOCOL_ERROR,
        DeviceFault.LOG_RESET,
        DeviceFault.DEVICE_REPLACED,
        DeviceFault.CLOCK_INVALID,
    }
)
# A terminal clock this far from the gateway's is not drifting: it is unset or dead.
CLOCK_INVALID_SECONDS = 86400.0
# Hysteresis: a raised clock_drift clears only once the drift is below this share of its threshold.
DRIFT_CLEAR_SHARE = 0.75
# A drift this close (seconds) to a whole number of hours is a timezone mistake, not a drift.
WHOLE_HOURS_TOLERANCE = 300.0


def _utc_offset(offset: dt.timedelta) -> str:
    """+01:00, -03:30: an offset from UTC as the zone tables write it."""
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class Thresholds:
    log_full_ratio: float = 0.9
    log_full_clear_ratio: float = 0.85  # hysteresis: clear only well below the raise level
    clock_drift_seconds: float = 60.0
    clock_drift_clear_seconds: float = 45.0
    offline_after_failures: int = 3
    silent_hours: float = 0.0  # 0: never silent
    fault_hold_seconds: float = 600.0

    @classmethod
    def from_settings(cls, health: HealthSettings) -> Thresholds:
        """The thresholds of these settings; terminals with equal ones share one (frozen)."""
        return _shared_thresholds(
            health.log_full_ratio,
            health.clock_drift_seconds,
            health.offline_after_failures,
            health.silent_hours,
            health.fault_hold_seconds,
        )


@functools.lru_cache(maxsize=256)
def _shared_thresholds(
    log_full_ratio: float,
    clock_drift_seconds: float,
    offline_after_failures: int,
    silent_hours: float,
    fault_hold_seconds: float,
) -> Thresholds:
    # Shared like the calendars (`calendar_for`): one per distinct set of values, not one
    # for each of a fleet's terminals (issue 18).
    return Thresholds(
        log_full_ratio=log_full_ratio,
        log_full_clear_ratio=max(0.0, log_full_ratio - 0.05),
        clock_drift_seconds=clock_drift_seconds,
        clock_drift_clear_seconds=clock_drift_seconds * DRIFT_CLEAR_SHARE,
        offline_after_failures=offline_after_failures,
        silent_hours=silent_hours,
        fault_hold_seconds=fault_hold_seconds,
    )


def calendar_for(health: HealthSettings, zone: str) -> WorkingCalendar:
    """The terminal's working calendar; terminals with the same one share it (it is frozen):
    5,000 terminals would otherwise hold 5,000 equal copies, each with its own sets."""
    return _shared_calendar(
        zone, tuple(health.work_days), health.work_start, health.work_end, tuple(health.holidays)
    )


@functools.lru_cache(maxsize=256)
def _shared_calendar(
    zone: str, days: tuple[str, ...], start: dt.time, end: dt.time, holidays: tuple[dt.date, ...]
) -> WorkingCalendar:
    return WorkingCalendar.build(zone=zone, days=days, start=start, end=end, holidays=holidays)


class DeviceHealth:
    """One terminal's health, fed by its worker."""

    def __init__(
        self,
        name: str,
        thresholds: Thresholds | None = None,
        *,
        calendar: WorkingCalendar | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.name = name
        self.thresholds = thresholds or Thresholds()
        self.calendar = calendar
        self.clock = clock
        self.faults = FaultSet(
            name, hold=HELD_FAULTS, hold_seconds=self.thresholds.fault_hold_seconds, clock=clock
        )
        self.on_change: list[ChangeListener] = []
        # Told instead when nothing in the change key moved: the record and user counts, which
        # are not in it, may have (`_change_key`).
        self.on_counts_only: list[ChangeListener] = []
        self.on_notice: list[NoticeListener] = []
        self.consecutive_failures = 0
        self.ever_contacted = False
        self.first_contact: dt.datetime | None = None
        self.last_contact: dt.datetime | None = None
        self.last_error: str | None = None
        self.clock_drift_seconds: float | None = None
        self.info: DeviceInfo | None = None
        self.last_read_count: int | None = None
        self.last_punch_at: dt.datetime | None = None  # UTC time of the newest punch stored
        self.records_read_total = 0
        self.punches_new_total = 0
        self.reads_total = 0
        self.failures_total = 0
        self.clock_corrections_total = 0
        self._published: tuple[Any, ...] | None = None  # the last change key's values (`_changed`)

    # --- derived state -------------------------------------------------------------------
    @property
    def status(self) -> DeviceStatus:
        offline_faults = any(CATALOGUE[c].takes_offline for c in self.faults.active)
        if not self.ever_contacted or (
            offline_faults and self.consecutive_failures >= self.thresholds.offline_after_failures
        ):
            return DeviceStatus.OFFLINE
        if self.faults.active:
            return DeviceStatus.DEGRADED
        return DeviceStatus.ONLINE

    # --- what workers report -------------------------------------------------------------
    def contact_ok(self, info: DeviceInfo, *, drift_seconds: float | None) -> None:
        now = self.clock()
        self.consecutive_failures = 0
        self.ever_contacted = True
        self.first_contact = self.first_contact or now
        self.last_contact = now
        self.last_error = None
        self.info = info
        self.clock_drift_seconds = drift_seconds
        for code in _CONTACT_FAULTS:
            self.faults.clear_fault(code)
        self._check_capacity(info)
        self._check_clock(info, drift_seconds)
        self._check_enabled(info)
        self._check_silent(now)
        self.faults.release_held()
        self._changed()

    def contact_failed(self, fault: str, detail: str) -> None:
        self.consecutive_failures += 1
        self.failures_total += 1
        self.last_error = detail
        code = fault if fault in CATALOGUE else DeviceFault.PROTOCOL_ERROR
        # A contact failure replaces the previous one: a terminal is unreachable OR refuses
        # our key, not both at once.
        for other in _CONTACT_FAULTS:
            if other != code:
                self.faults.clear_fault(other)
        self.faults.raise_fault(code, detail)
        self._changed()

    def log_in_step(self) -> None:
        """A poll found the log as the buffer knows it: its count agrees with the last good read
        (after a reconnect, its last stored record is in its place too). The terminal answers
        cleanly again, so a protocol error seen earlier is over, as after a read. Without this
        a terminal with nothing new kept the fault until its next punch or whole read. (Held:
        it goes once its hold is over, at a later contact, like every held fault.)"""
        if DeviceFault.PROTOCOL_ERROR in self.faults.active:
            self.faults.clear_fault(DeviceFault.PROTOCOL_ERROR)
            self._changed()

    def read_done(self, *, count: int, new: int) -> None:
        self.reads_total += 1
        self.last_read_count = count
        self.records_read_total += count
        self.punches_new_total += new
        self.faults.clear_fault(DeviceFault.PROTOCOL_ERROR)
        self.faults.release_held()
        self._changed()

    def staged_punches_moved(self, new: int) -> None:
        """Punches staged at an upload (gateway/staged_mover.py) reached the outbox; `new` of
        them were not stored before (the upload's `read_done` counted them as read, none new)."""
        self.punches_new_total += new
        self._changed()

    def punches_stored(self, newest: dt.datetime) -> None:
        """New punches were committed; `newest` is the UTC time of the latest of them."""
        now = self.clock()
        newest = min(newest, now)  # a terminal clock running ahead must not buy silence
        if self.last_punch_at is None or newest > self.last_punch_at:
            self.last_punch_at = newest
        self._check_silent(now)
        self._changed()

    def set_fault(self, code: str, active: bool, detail: str = "") -> None:
        if self.faults.set(code, active, detail):
            self._changed()

    def clock_corrected(self, *, drift_seconds: float, detail: str) -> None:
        """The worker set the terminal's clock; published as a `clock_corrected` event."""
        self.clock_corrections_total += 1
        log.info("clock_corrected", device=self.name, drift=round(drift_seconds, 1), detail=detail)
        notice = Notice(self.name, "clock_corrected", "clock_drift", Severity.INFO, detail, self.clock())
        for listener in self.on_notice:
            try:
                listener(notice)
            except Exception:
                log.exception("notice_listener_failed", device=self.name)

    # --- the checks ----------------------------------------------------------------------
    def _check_capacity(self, info: DeviceInfo) -> None:
        if not info.record_capacity or info.record_count is None:
            return
        ratio = info.record_count / info.record_capacity
        detail = f"{info.record_count} of {info.record_capacity} records ({ratio:.0%})"
        if ratio >= self.thresholds.log_full_ratio:
            self.faults.raise_fault(DeviceFault.LOG_NEARLY_FULL, detail)
        elif ratio < self.thresholds.log_full_clear_ratio:
            self.faults.clear_fault(DeviceFault.LOG_NEARLY_FULL)

    def _check_clock(self, info: DeviceInfo, drift: float | None) -> None:
        if info.clock is None:
            return  # the terminal does not tell its time: nothing to judge
        reads = info.clock.isoformat(sep=" ")
        if info.clock.year < 2000 or drift is None or abs(drift) > CLOCK_INVALID_SECONDS:
            gap = "" if drift is None else f", {drift:+.0f} s from the gateway's"
            self.faults.raise_fault(DeviceFault.CLOCK_INVALID, f"terminal clock reads {reads}{gap}")
            self.faults.clear_fault(DeviceFault.CLOCK_DRIFT)  # not drift: a clock that was never set or died
            return
        self.faults.clear_fault(DeviceFault.CLOCK_INVALID)
        size = abs(drift)
        if size > self.thresholds.clock_drift_seconds:
            self.faults.raise_fault(DeviceFault.CLOCK_DRIFT, self._drift_detail(drift))
        elif size < self.thresholds.clock_drift_clear_seconds:
            self.faults.clear_fault(DeviceFault.CLOCK_DRIFT)

    def _drift_detail(self, drift: float) -> str:
        """The clock_drift detail. A drift of whole hours is no drifting clock: the terminal keeps
        another zone's time than the config says (the zone, or a DST change, set wrong)."""
        detail = f"terminal clock off by {drift:+.0f} s (limit {self.thresholds.clock_drift_seconds:g} s)"
        hours = round(drift / 3600)
        if hours == 0 or abs(drift - hours * 3600) > WHOLE_HOURS_TOLERANCE:
            return detail
        minutes = round(abs(drift) / 60)
        side = "ahead" if drift > 0 else "behind"
        detail += (
            f": off by {minutes // 60} h {minutes % 60} min ({side}): "
            "probably the terminal's timezone is wrong in the config"
        )
        if self.calendar is None:  # built without the terminal's zone (some tests)
            return detail
        zone = self.calendar.zone  # the terminal's zone, as configured
        configured = self.clock().astimezone(zone).utcoffset() or dt.timedelta(0)
        kept = configured + dt.timedelta(hours=hours)
        return (
            f'{detail} (timezone = "{zone.key}", UTC{_utc_offset(configured)} now; '
            f"the terminal's clock keeps UTC{_utc_offset(kept)})"
        )

    def _check_enabled(self, info: DeviceInfo) -> None:
        enabled = info.extra.get("enabled")
        if enabled is None:
            return  # the driver cannot tell
        self.faults.set(
            DeviceFault.STUCK_DISABLED,
            enabled is False,
            "terminal reports itself disabled (it refuses punches) at the start of our contact",
        )

    def _check_silent(self, now: dt.datetime) -> None:
        hours = self.thresholds.silent_hours
        if hours <= 0 or self.calendar is None:
            return
        since = self.last_punch_at or self.first_contact
        if since is None:
            return
        worked = self.calendar.working_seconds(since, now)
        last = "no punch seen yet" if self.last_punch_at is None else f"last punch {since:%Y-%m-%d %H:%M} UTC"
        self.faults.set(
            DeviceFault.SILENT,
            worked > hours * 3600,
            f"no punches for {worked / 3600:.1f} working hours (limit {hours:g} h; {last})",
        )

    def _change_key(self) -> dict[str, Any]:
        """What counts as a change worth publishing: not every contact's timestamp, not a
        fault's wording (silent's hour count grows every poll), not drift jitter of a second.
        Nor the record and user counts: whether they moved enough depends on what was last
        published (`sync.contract.count_moved`), which the listeners of `on_counts_only`
        know. In the key, a log growing at every poll had every poll build the state's model
        to find it unchanged (3 % of a 5,000-terminal daemon's samples, issue 18)."""
        key = self.snapshot()
        key.pop("last_contact")
        key.pop("record_count")
        key.pop("user_count")
        key["faults"] = sorted(f["code"] for f in key["faults"])
        drift = key["clock_drift_seconds"]
        key["clock_drift_seconds"] = None if drift is None else round(drift / 5)
        return key

    def _changed(self) -> None:
        # Kept as the key's values only: its keys are always the same, in the same order, so
        # the values compare as the dicts would, in a third of the memory (a tuple of 11
        # against a dict of 11, held for every terminal: issue 18).
        key = tuple(self._change_key().values())
        if key == self._published:
            listeners = self.on_counts_only  # publish on change only: theirs to decide
        else:
            self._published = key
            listeners = self.on_change
        for listener in listeners:
            try:
                listener(self)
            except Exception:
                log.exception("health_listener_failed", device=self.name)

    def snapshot(self) -> dict[str, Any]:
        """The retained `devices/{device}/state` payload (sync.contract.DeviceState)."""
        info = self.info
        return {
            "device": self.name,
            "state": self.status.value,
            "faults": [f.as_dict() for f in self.faults.active.values()],
            "last_contact": self.last_contact,
            "last_error": self.last_error,
            "clock_drift_seconds": self.clock_drift_seconds,
            "serial_number": info.serial_number if info else None,
            "model": info.model if info else None,
            "firmware": info.firmware if info else None,
            "platform": info.platform if info else None,
            "record_count": info.record_count if info else None,
            "record_capacity": info.record_capacity if info else None,
            "user_count": info.user_count if info else None,
            "user_capacity": info.user_capacity if info else None,
        }

    def api_view(self) -> dict[str, Any]:
        """The snapshot plus counters for /api/devices and `punchgate status` (not a contract)."""
        return {
            **self.snapshot(),
            "last_punch_at": self.last_punch_at,
            "consecutive_failures": self.consecutive_failures,
            "failures_total": self.failures_total,
            "reads_total": self.reads_total,
            "punches_new_total": self.punches_new_total,
            "clock_corrections_total": self.clock_corrections_total,
        }
