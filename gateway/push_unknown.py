"""Serial numbers no `[[terminals]]` entry claims, as the push listener meets them.

`[push] unknown_terminals` decides: `refuse` (403; the terminal keeps its records) or
`quarantine` (its punches are stored under a device of its own, `unknown-<serial>`, at most
`MAX_QUARANTINED` of them; more are refused). Either way the gateway fault
`unknown_terminal` is raised once per serial number, naming it and its address (a raised
event for each, while the fault stays one active fault), and cleared once no unknown terminal
has asked for `fault_hold_seconds` (at least `MIN_UNKNOWN_HOLD`). The serial number of an
entry with `enabled = false` is refused without being unknown.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from punchgate.drivers.zk_push.backend import PushTerminal
from punchgate.drivers.zk_push.config import ZkPushTerminal
from punchgate.gateway.faults import CATALOGUE, FaultTransition
from punchgate.gateway.ratelimit_log import RateLimitedLog
from punchgate.sync.faults import GatewayFault

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)

MAX_UNKNOWN_TRACKED = 256  # unknown serial numbers remembered (the oldest forgotten first)
MAX_QUARANTINED = 32  # unknown serial numbers stored under devices of their own; more are refused
MIN_UNKNOWN_HOLD = 60.0  # seconds unknown_terminal stays raised at least
QUARANTINE_PREFIX = "unknown-"


@dataclass
class UnknownSerial:
    address: str
    first: float
    last: float
    requests: int = 0


class UnknownTerminals:
    """The unknown serial numbers seen, the quarantined ones, and the fault about them."""

    def __init__(self, app: Application, limited: RateLimitedLog) -> None:
        self.app = app
        self.limited = limited
        self._unknown: OrderedDict[str, UnknownSerial] = OrderedDict()
        self._quarantined: dict[str, PushTerminal] = {}
        self._disabled = {  # serial number -> name of a zk-push entry with enabled = false
            t.serial_number: t.name
            for t in app.settings.terminals
            if isinstance(t, ZkPushTerminal) and not t.enabled
        }

    def decide(self, serial_number: str, address: str) -> PushTerminal | None:
        """How to serve a serial number no entry claims (quarantined), or None to refuse it."""
        if serial_number in self._disabled:  # configured, and switched off: refused, not unknown
            self.limited.info(
                "push_terminal_disabled", key="push_terminal_disabled", device=self._disabled[serial_number]
            )
            return None
        now = time.monotonic()
        entry = self._unknown.get(serial_number)
        first = entry is None
        if entry is None:
            while len(self._unknown) >= MAX_UNKNOWN_TRACKED:
                self._unknown.popitem(last=False)
            entry = self._unknown[serial_number] = UnknownSerial(address, now, now)
        entry.last, entry.address = now, address
        entry.requests += 1
        terminal = (
            self._quarantine(serial_number)
            if self.app.settings.push.unknown_terminals == "quarantine"
            else None
        )
        if first:
            self._raise_fault(serial_number, address, terminal)
        else:
            self.limited.warning(
                "unknown_terminal_request",
                key="unknown_terminal_request",
                serial=serial_number,
                address=address,
                outcome="quarantined" if terminal is not None else "refused",
            )
        return terminal

    def forget_when_quiet(self, now: float) -> None:
        """Clear unknown_terminal once no unknown terminal has asked for the hold time."""
        faults = self.app.gateway_faults
        code = GatewayFault.UNKNOWN_TERMINAL
        if code not in faults.active:
            return
        hold = max(MIN_UNKNOWN_HOLD, self.app.settings.health.fault_hold_seconds)
        if any(now - entry.last < hold for entry in self._unknown.values()):
            return
        self._unknown.clear()
        faults.clear_fault(code, f"no unknown push terminal for {hold:g} s")

    def _quarantine(self, serial_number: str) -> PushTerminal | None:
        terminal = self._quarantined.get(serial_number)
        if terminal is not None:
            return terminal
        name = QUARANTINE_PREFIX + serial_number
        taken = {t.name for t in self.app.settings.terminals}
        if name in taken or len(self._quarantined) >= MAX_QUARANTINED:
            return None
        terminal = PushTerminal(
            name=name, serial_number=serial_number, timezone=self.app.settings.timezone, quarantined=True
        )
        self._quarantined[serial_number] = terminal
        return terminal

    def _raise_fault(self, serial_number: str, address: str, quarantined: PushTerminal | None) -> None:
        outcome = (
            f"its punches are stored under device {quarantined.name}"
            if quarantined is not None
            else "its uploads are refused and it keeps its records"
        )
        detail = (
            f"a push terminal with serial number {serial_number} at {address} is not in the config: "
            f"{outcome}; add a zk-push terminal with this serial_number"
        )
        log.warning("unknown_terminal", serial=serial_number, address=address, detail=detail)
        faults = self.app.gateway_faults
        code = GatewayFault.UNKNOWN_TERMINAL
        if code not in faults.active:
            faults.raise_fault(code, detail)
            return
        # Already raised for another serial number: a raised event for this one too (once per
        # serial number), while the fault itself stays one active fault.
        faults.raise_fault(code, detail)  # the active fault now names the latest one
        transition = FaultTransition("", code, True, CATALOGUE[code].severity, detail, faults.clock())
        for listener in faults.on_transition:
            try:
                listener(transition)
            except Exception:
                log.exception("fault_listener_failed", code=code)
