"""Who is asking: the receiver's check of every request's serial number and address.

A request must name a serial number (`SN=`) of the right shape, one the gateway serves (an
entry, or what `PushBackend.unknown_terminal` decides for a serial no entry claims), and come
from the entry's `allowed_sources` when it has any. Anything else is refused before a handler
reads the body, counted under `refused_<why>` in the receiver's counts.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Sequence

from aiohttp import web

from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push.answers import refuse
from punchgate.drivers.zk_push.backend import PushBackend, PushTerminal
from punchgate.drivers.zk_push.config import SERIAL_PATTERN
from punchgate.drivers.zk_push.terminal_state import TerminalState

_SERIAL = re.compile(SERIAL_PATTERN)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def in_networks(address: str, networks: Sequence[str]) -> bool:
    """True when `address` (IPv4-mapped IPv6 counts as IPv4) lies in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


class Gatekeeper:
    """Identifies each request's terminal and keeps its `TerminalState` (by device name)."""

    def __init__(self, terminals: Sequence[PushTerminal], backend: PushBackend, counts: Counter[str]) -> None:
        self.by_serial = {t.serial_number: t for t in terminals}
        self.backend = backend
        self.counts = counts
        self.states: dict[str, TerminalState] = {}  # by device name

    def identify(self, request: web.Request) -> TerminalState:
        """The asking terminal's state; raises the refusal (400, 403) otherwise."""
        serial = request.query.get("SN") or request.query.get("sn") or ""
        if not serial:
            self.counts["refused_no_serial"] += 1
            raise refuse(400, "no SN= in the request: the terminal must name its serial number")
        if not _SERIAL.fullmatch(serial):
            self.counts["refused_bad_serial"] += 1
            raise refuse(400, "SN= is not a serial number (letters, digits, '.', '_', '-'; at most 56)")
        address = client_address(request)
        terminal = self._served(serial, address)
        if terminal.allowed_sources and not in_networks(address, terminal.allowed_sources):
            self.counts["refused_wrong_source"] += 1
            self.backend.problem(
                terminal,
                DeviceFault.PROTOCOL_ERROR,
                f"a request naming serial {serial} came from {address}, not from allowed_sources "
                f"({', '.join(terminal.allowed_sources)}): refused",
            )
            raise refuse(403, f"serial number {serial} may not connect from {address}")
        state = self.states.get(terminal.name)
        if state is None or state.terminal != terminal:
            state = self.states[terminal.name] = TerminalState(terminal)
        return state

    def _served(self, serial: str, address: str) -> PushTerminal:
        """The terminal this serial number is served as; 403 when it is not served."""
        terminal = self.by_serial.get(serial)
        if terminal is None:
            terminal = self.backend.unknown_terminal(serial, address)
            if terminal is None:
                self.counts["refused_unknown_serial"] += 1
                raise refuse(
                    403, f"serial number {serial} is not configured on this gateway: add a zk-push terminal"
                )
        return terminal
