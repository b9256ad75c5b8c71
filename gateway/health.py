"""The device health model: fault catalogue, per-terminal state, raise-once/clear-once transitions.

Workers report what they observe (a contact, a failure, a read, a refusal); this module
decides which faults are active, derives the device state from them, and tells its listeners
about every transition exactly once. Listeners publish (MQTT), count (metrics) and log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from drivers.base import DeviceInfo

log = structlog.get_logger(__name__)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class DeviceStatus(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class FaultKind:
    code: str
    severity: Severity
    summary: str
    takes_offline: bool = False  # a fault that means we cannot read the terminal at all


CATALOGUE: dict[str, FaultKind] = {
    kind.code: kind
    for kind in (
        FaultKind("unreachable", Severity.ERROR, "terminal does not answer on the network/line", True),
        FaultKind("timeout", Severity.ERROR, "terminal accepted the session but stopped answering", True),
        FaultKind("auth_failed", Severity.ERROR, "terminal refused the comm key", True),
        FaultKind("protocol_error", Severity.WARNING, "garbage or unexpected reply from the terminal"),
        FaultKind("unsupported", Severity.ERROR, "device does not speak this protocol", True),
        FaultKind("stuck_disabled", Severity.WARNING, "terminal stays disabled after our session"),
        FaultKind("log_nearly_full", Severity.WARNING, "attendance log close to its capacity"),
        FaultKind("log_reset", Severity.WARNING, "record count went down without us clearing it"),
        FaultKind("device_replaced", Severity.WARNING, "serial number changed"),
        FaultKind("clock_drift", Severity.WARNING, "terminal clock differs from the gateway's"),
        FaultKind("clock_invalid", Severity.ERROR, "terminal clock or punch times cannot be right"),
        FaultKind("silent", Severity.INFO, "no punches for longer than expected on a working day"),
        FaultKind(
            "buffer_full", Severity.CRITICAL, "gateway buffer holds its maximum of undelivered punches"
        ),
        FaultKind("disk_low", Severity.CRITICAL, "gateway disk below its free-space minimum"),
        FaultKind("broker_unreachable", Severity.ERROR, "MQTT broker cannot be reached"),
    )
}


@dataclass(frozen=True, slots=True)
class ActiveFault:
    code: str
    severity: Severity
    detail: str
    since: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "detail": self.detail,
            "since": self.since,
        }


@dataclass(frozen=True, slots=True)
class FaultTransition:
    device: str  # terminal name, or "" for the gateway itself
    code: str
    raised: bool
    severity: Severity
    detail: str
    at: dt.datetime


TransitionListener = Callable[[FaultTransition], None]
ChangeListener = Callable[["DeviceHealth"], None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FaultSet:
    """Active faults of one subject, with raise-once/clear-once semantics."""

    subject: str
    on_transition: list[TransitionListener] = field(default_factory=list)
    active: dict[str, ActiveFault] = field(default_factory=dict)

    def raise_fault(self, code: str, detail: str) -> bool:
        """Activate `code`; True when this is a transition. A changed detail updates silently."""
        kind = CATALOGUE[code]
        existing = self.active.get(code)
        if existing is not None:
            if existing.detail != detail:
                self.active[code] = ActiveFault(code, kind.severity, detail, existing.since)
            return False
        fault = ActiveFault(code, kind.severity, detail, _now())
        self.active[code] = fault
        log.warning("fault_raised", subject=self.subject or "gateway", code=code, detail=detail)
        self._emit(FaultTransition(self.subject, code, True, kind.severity, detail, fault.since))
        return True

    def clear_fault(self, code: str, detail: str = "") -> bool:
        fault = self.active.pop(code, None)
        if fault is None:
            return False
        log.info("fault_cleared", subject=self.subject or "gateway", code=code)
        self._emit(FaultTransition(self.subject, code, False, fault.severity, detail or fault.detail, _now()))
        return True

    def set(self, code: str, active: bool, detail: str = "") -> bool:
        return self.raise_fault(code, detail) if active else self.clear_fault(code)

    def _emit(self, transition: FaultTransition) -> None:
        for listener in self.on_transition:
            try:
                listener(transition)
            except Exception:  # a broken listener must never stop health tracking
                log.exception("fault_listener_failed", code=transition.code)


# Faults a successful contact proves gone.
_CONTACT_FAULTS = ("unreachable", "timeout", "auth_failed", "unsupported")


@dataclass
class Thresholds:
    log_full_ratio: float = 0.9
    log_full_clear_ratio: float = 0.85  # hysteresis: clear only well below the raise level
    clock_drift_seconds: float = 60.0
    offline_after_failures: int = 3


class DeviceHealth:
    """One terminal's health, fed by its worker."""

    def __init__(self, name: str, thresholds: Thresholds | None = None) -> None:
        self.name = name
        self.thresholds = thresholds or Thresholds()
        self.faults = FaultSet(name)
        self.on_change: list[ChangeListener] = []
        self.consecutive_failures = 0
        self.ever_contacted = False
        self.last_contact: dt.datetime | None = None
        self.last_error: str | None = None
        self.clock_drift_seconds: float | None = None
        self.info: DeviceInfo | None = None
        self.last_read_count: int | None = None
        self.records_read_total = 0
        self.punches_new_total = 0
        self.reads_total = 0
        self.failures_total = 0

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
        self.consecutive_failures = 0
        self.ever_contacted = True
        self.last_contact = _now()
        self.last_error = None
        self.info = info
        self.clock_drift_seconds = drift_seconds
        for code in _CONTACT_FAULTS:
            self.faults.clear_fault(code)
        self._check_capacity(info)
        self._changed()

    def contact_failed(self, fault: str, detail: str) -> None:
        self.consecutive_failures += 1
        self.failures_total += 1
        self.last_error = detail
        code = fault if fault in CATALOGUE else "protocol_error"
        # A contact failure replaces the previous one: a terminal is unreachable OR refuses
        # our key, not both at once.
        for other in _CONTACT_FAULTS:
            if other != code:
                self.faults.clear_fault(other)
        self.faults.raise_fault(code, detail)
        self._changed()

    def read_done(self, *, count: int, new: int) -> None:
        self.reads_total += 1
        self.last_read_count = count
        self.records_read_total += count
        self.punches_new_total += new
        self.faults.clear_fault("protocol_error")
        self._changed()

    def set_fault(self, code: str, active: bool, detail: str = "") -> None:
        if self.faults.set(code, active, detail):
            self._changed()

    def _check_capacity(self, info: DeviceInfo) -> None:
        if not info.record_capacity or info.record_count is None:
            return
        ratio = info.record_count / info.record_capacity
        detail = f"{info.record_count} of {info.record_capacity} records ({ratio:.0%})"
        if ratio >= self.thresholds.log_full_ratio:
            self.faults.raise_fault("log_nearly_full", detail)
        elif ratio < self.thresholds.log_full_clear_ratio:
            self.faults.clear_fault("log_nearly_full")

    def _changed(self) -> None:
        for listener in self.on_change:
            try:
                listener(self)
            except Exception:
                log.exception("health_listener_failed", device=self.name)

    def snapshot(self) -> dict[str, Any]:
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
