"""Push terminals that went silent: a missed heartbeat is a failed contact.

A push terminal cannot be polled; it is alive when it asks. `HeartbeatWatch` notes each
terminal's last request (`heard_from`, on every contact). A terminal that sends nothing for
`missed_heartbeats` × its `delay` seconds is reported to its `DeviceHealth` as a failed
contact (`unreachable`), again every `delay` seconds until it is back, so it goes offline
after `offline_after_failures` such reports, as a pulled terminal would.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push.backend import PushTerminal

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)


@dataclass
class Watched:
    terminal: PushTerminal
    last_request: float  # monotonic; the start of the listener until the first request
    reported_at: float | None = None  # when silence was last reported (None: not silent)


class HeartbeatWatch:
    """Each served terminal's last request, and its silence reported (see the module docstring)."""

    def __init__(self, app: Application, *, missed_heartbeats: int) -> None:
        self.app = app
        self.missed_heartbeats = missed_heartbeats
        self._watched: dict[str, Watched] = {}

    def begin(self, terminals: Sequence[PushTerminal]) -> None:
        """Start watching (the listener serves from now on)."""
        now = time.monotonic()
        self._watched = {t.name: Watched(t, now) for t in terminals}

    def heard_from(self, terminal: PushTerminal) -> None:
        watched = self._watched.get(terminal.name)
        if watched is not None:
            watched.last_request = time.monotonic()
            if watched.reported_at is not None:
                watched.reported_at = None
                log.info("push_terminal_back", device=terminal.name)

    def check(self, now: float) -> None:
        for watched in self._watched.values():
            self._check_heartbeat(watched, now)

    def _check_heartbeat(self, watched: Watched, now: float) -> None:
        """Report a terminal silent for `missed_heartbeats` × its delay, again every delay."""
        missed, delay = self.missed_heartbeats, watched.terminal.delay
        silent = now - watched.last_request
        if silent <= missed * delay:
            return
        if watched.reported_at is not None and now - watched.reported_at < delay:
            return
        name = watched.terminal.name
        if watched.reported_at is None:
            log.warning("push_terminal_silent", device=name, seconds=round(silent), delay=delay)
        watched.reported_at = now
        health = self.app.devices.get(name)
        if health is not None:
            health.contact_failed(
                DeviceFault.UNREACHABLE,
                f"no request from the terminal for {silent:.0f} s (it should ask every {delay} s; "
                f"unreachable after {missed} missed): check its power, network and ADMS server setting",
            )
