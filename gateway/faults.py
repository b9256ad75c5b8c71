"""Faults as the gateway reports them: the catalogue, the active set, and its transitions.

The codes themselves are defined where they are raised (`punchgate.drivers.faults` for
terminals, `punchgate.sync.faults` for the gateway); this module gives each a severity and an
operator's summary, and `FaultSet` raises each once and clears it once, telling its listeners
(MQTT events, metrics, logs) about every transition exactly once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

import structlog

from punchgate.drivers.faults import DeviceFault
from punchgate.sync.faults import GatewayFault

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
        FaultKind(
            DeviceFault.UNREACHABLE, Severity.ERROR, "terminal does not answer on the network/line", True
        ),
        FaultKind(
            DeviceFault.TIMEOUT, Severity.ERROR, "terminal accepted the session but stopped answering", True
        ),
        FaultKind(DeviceFault.AUTH_FAILED, Severity.ERROR, "terminal refused the comm key", True),
        FaultKind(
            DeviceFault.PROTOCOL_ERROR, Severity.WARNING, "garbage or unexpected reply from the terminal"
        ),
        FaultKind(DeviceFault.UNSUPPORTED, Severity.ERROR, "device does not speak this protocol", True),
        FaultKind(DeviceFault.STUCK_DISABLED, Severity.WARNING, "terminal stays disabled after our session"),
        FaultKind(DeviceFault.LOG_NEARLY_FULL, Severity.WARNING, "attendance log close to its capacity"),
        FaultKind(DeviceFault.LOG_RESET, Severity.WARNING, "record count went down without us clearing it"),
        FaultKind(DeviceFault.DEVICE_REPLACED, Severity.WARNING, "serial number changed"),
        FaultKind(DeviceFault.CLOCK_DRIFT, Severity.WARNING, "terminal clock differs from the gateway's"),
        FaultKind(DeviceFault.CLOCK_INVALID, Severity.ERROR, "terminal clock or punch times cannot be right"),
        FaultKind(DeviceFault.SILENT, Severity.INFO, "no punches for longer than expected on a working day"),
        FaultKind(
            GatewayFault.BUFFER_FULL,
            Severity.CRITICAL,
            "gateway buffer holds its maximum of undelivered punches",
        ),
        FaultKind(GatewayFault.DISK_LOW, Severity.CRITICAL, "gateway disk below its free-space minimum"),
        FaultKind(GatewayFault.BROKER_UNREACHABLE, Severity.ERROR, "MQTT broker cannot be reached"),
        FaultKind(
            GatewayFault.DELIVERY_DELAYED, Severity.WARNING, "the oldest undelivered punch waits too long"
        ),
        FaultKind(
            GatewayFault.UNKNOWN_TERMINAL,
            Severity.WARNING,
            "a push terminal whose serial number is not in the config sends to the gateway",
        ),
        FaultKind(
            GatewayFault.CONFIRMATION_DELAYED,
            Severity.WARNING,
            "central delivery: the oldest punch sent waits too long for central's confirmation",
        ),
    )
}
# What the person on site should do about each fault: the "what to do" column of docs/health.md,
# word for word (a link there is plain text here; tests/console/test_health_view.py holds them
# equal). The console and `punchgate status` show it beside the fault.
WHAT_TO_DO: dict[str, str] = {
    "unreachable": "check power, cable, IP address and port; is another program holding the terminal's single session?",
    "timeout": "terminal busy or hung: wait, then reboot it; a large log can also need a longer `timeout`",
    "auth_failed": "set `comm_key` (or `PUNCHGATE_COMM_KEY_<NAME>`) to the key in the terminal's menu (Comm → Password)",
    "protocol_error": "usually transient (line noise, firmware hiccup); if it persists, check the firmware and `transport` (tcp/udp)",
    "unsupported": "wrong port or wrong `type` in the config",
    "stuck_disabled": "someone is in the terminal's menu, or another tool crashed mid-session; leave the menu or reboot the terminal",
    "log_nearly_full": "enable `clear_log` (guarded, see protocols/zk.md §6.6) or clear the log after a verified export; a full terminal refuses punches",
    "log_reset": "someone cleared the log on the terminal or with another tool; nothing is lost if it had been read — check the last full read",
    "device_replaced": "hardware was swapped: update inventory; the new terminal's punches get new ids (the serial is part of the id)",
    "clock_drift": "enable bounded correction (`clock_correct_max_seconds`) or set the clock; check the terminal's `timezone` if the drift is a whole number of hours",
    "clock_invalid": "replace the clock battery and set the time; review the quarantined punches",
    "silent": "is the terminal refusing punches (screen message)? Is the reader broken? Or is the site simply closed — add a holiday",
    "buffer_full": "fix the broker connection; punches resume flowing by themselves",
    "disk_low": "free disk space on the gateway",
    "broker_unreachable": "check the broker, network, credentials and TLS files (`last_error` in `/api/devices`, log event `mqtt_connect_failed`)",
    "delivery_delayed": "the broker accepts too slowly or not at all; see `broker_unreachable`",
    "unknown_terminal": "add a `zk-push` entry with that `serial_number`, or point the terminal elsewhere (zk-push.md)",
    "confirmation_delayed": "the broker takes the punches but no central consumer confirms them: check `punchgate sink` (or your consumer) and its database; the gateway keeps sending them again",
}
# Faults of the gateway itself (subject ""); the rest belong to terminals.
GATEWAY_FAULTS: tuple[str, ...] = tuple(GatewayFault)
DEVICE_FAULTS: tuple[str, ...] = tuple(DeviceFault)


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

    @property
    def event(self) -> str:
        return "fault_raised" if self.raised else "fault_cleared"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth publishing that is not a fault transition (e.g. a clock correction)."""

    device: str
    event: Literal["clock_corrected"]
    code: str
    severity: Severity
    detail: str
    at: dt.datetime


TransitionListener = Callable[[FaultTransition], None]
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# One shared empty set of fault codes, for the sets every terminal holds and rarely fills
# (`FaultSet._clear_wanted`, `FailureLog._logged_faults`): an empty frozenset is not a
# singleton, and a set of its own would cost each terminal 216 bytes.
NO_CODES: Final[frozenset[str]] = frozenset()


@dataclass
class FaultSet:
    """Active faults of one subject, with raise-once/clear-once semantics.

    Codes in `hold` are one-off observations (a count that went down, a garbage reply): they
    stay active until `hold_seconds` have passed since they were last seen, so a dashboard
    polled every minute still shows them, and a condition that comes and goes does not flap.
    """

    subject: str
    on_transition: list[TransitionListener] = field(default_factory=list)
    active: dict[str, ActiveFault] = field(default_factory=dict)
    hold: frozenset[str] = frozenset()
    hold_seconds: float = 0.0
    clock: Clock = utc_now
    last_seen: dict[str, dt.datetime] = field(default_factory=dict)
    # Rebound, not mutated: nearly every subject never holds one (`NO_CODES`).
    _clear_wanted: frozenset[str] = NO_CODES

    def raise_fault(self, code: str, detail: str) -> bool:
        """Activate `code`; True when this is a transition. A changed detail updates silently."""
        kind = CATALOGUE[code]
        now = self.clock()
        self.last_seen[code] = now
        self._forget_clear(code)
        existing = self.active.get(code)
        if existing is not None:
            if existing.detail != detail:
                self.active[code] = ActiveFault(code, kind.severity, detail, existing.since)
            return False
        fault = ActiveFault(code, kind.severity, detail, now)
        self.active[code] = fault
        log.warning("fault_raised", subject=self.subject or "gateway", code=code, detail=detail)
        self._emit(FaultTransition(self.subject, code, True, kind.severity, detail, fault.since))
        return True

    def clear_fault(self, code: str, detail: str = "") -> bool:
        """Deactivate `code`; True when this is a transition (a held code may have to wait)."""
        if code not in self.active:
            return False
        if code in self.hold and not self._hold_over(code):
            self._clear_wanted |= {code}
            return False
        self._forget_clear(code)
        fault = self.active.pop(code)
        log.info("fault_cleared", subject=self.subject or "gateway", code=code)
        self._emit(
            FaultTransition(self.subject, code, False, fault.severity, detail or fault.detail, self.clock())
        )
        return True

    def set(self, code: str, active: bool, detail: str = "") -> bool:
        return self.raise_fault(code, detail) if active else self.clear_fault(code)

    def release_held(self) -> bool:
        """Clear held faults whose condition is gone and whose hold is over; True if any cleared."""
        cleared = False
        for code in sorted(self._clear_wanted):
            if self._hold_over(code):
                cleared |= self.clear_fault(code)
        return cleared

    def _forget_clear(self, code: str) -> None:
        if code in self._clear_wanted:
            self._clear_wanted = self._clear_wanted - {code} or NO_CODES

    def _hold_over(self, code: str) -> bool:
        seen = self.last_seen.get(code)
        return seen is None or (self.clock() - seen).total_seconds() >= self.hold_seconds

    def _emit(self, transition: FaultTransition) -> None:
        for listener in self.on_transition:
            try:
                listener(transition)
            except Exception:  # a broken listener must never stop health tracking
                log.exception("fault_listener_failed", code=transition.code)


# Faults a successful contact proves gone.
