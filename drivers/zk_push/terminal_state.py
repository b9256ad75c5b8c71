"""What the receiver holds for one push terminal between its requests.

`TerminalState` keeps the terminal's meta (stamps, unparsed lines) as last loaded from or saved
to the buffer, the facts it reported (INFO, devicecmd), the lock that makes its requests that
change what is remembered run one at a time, and its log budget, so a terminal sending
garbage cannot flood the log.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from punchgate.drivers.base import DeviceInfo
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push import protocol
from punchgate.drivers.zk_push.backend import PushBackend, PushTerminal

MAX_LOGGED_LINES = 20  # bad lines / operations logged per terminal per minute; the rest counted
MAX_INFO = 50  # device facts remembered per terminal


@dataclass
class LogBudget:
    """At most MAX_LOGGED_LINES detailed log lines a minute per terminal; the rest only counted."""

    window: float = 0.0
    used: int = 0

    def take(self) -> bool:
        now = time.monotonic()
        if now - self.window >= 60:
            self.window, self.used = now, 0
        self.used += 1
        return self.used <= MAX_LOGGED_LINES


@dataclass
class TerminalState:
    """What the receiver holds for one terminal between requests."""

    terminal: PushTerminal
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    meta: dict[str, Any] | None = None  # loaded on first use, then kept in step with the buffer
    meta_unsaved: bool = False  # changed since loaded (a new serial number) and not saved yet
    # The stamps as last saved, when, and whether `meta` holds newer ones not saved yet (a stamp
    # that only moved forward may wait: see stamps.STAMP_SAVE_EVERY).
    saved_stamps: dict[str, str] = field(default_factory=dict)
    saved_at: float = float("-inf")  # time.monotonic() of the last meta save
    stamps_unsaved: bool = False
    pushver: str | None = None
    facts: dict[str, str] = field(default_factory=dict)  # INFO and devicecmd facts
    budget: LogBudget = field(default_factory=LogBudget)

    def device_info(self) -> DeviceInfo:
        facts = self.facts
        firmware = facts.get("firmware") or facts.get("FWVersion") or ""
        if not firmware and self.pushver:
            firmware = f"push {self.pushver}"
        extra: dict[str, Any] = {"push_version": self.pushver} if self.pushver else {}
        if facts.get("ip"):
            extra["ip"] = facts["ip"]
        return DeviceInfo(
            serial_number=self.terminal.serial_number,
            firmware=firmware[:80],
            user_count=protocol.count(facts.get("user_count") or facts.get("UserCount")),
            record_count=protocol.count(facts.get("record_count") or facts.get("TransactionCount")),
            extra=extra,
        )

    def remember(self, facts: dict[str, str]) -> None:
        """Keep reported facts, at most MAX_INFO of them (known ones are always updated)."""
        for key, value in facts.items():
            if key in self.facts or len(self.facts) < MAX_INFO:
                self.facts[key] = value

    async def loaded_meta(self, backend: PushBackend) -> dict[str, Any]:
        """The terminal's meta, read from the buffer on first use. Meta stored for another
        serial number is dropped (`device_replaced`): its stamps would make this one skip
        its records."""
        if self.meta is None:
            meta = await backend.load_meta(self.terminal.name)
            serial = self.terminal.serial_number
            known = meta.get("serial_number")
            if known and known != serial:
                # The entry now names another terminal: the old one's stamps would make this
                # one skip its records.
                backend.problem(
                    self.terminal,
                    DeviceFault.DEVICE_REPLACED,
                    f"serial number changed from {known} to {serial}; its upload starts from the beginning",
                )
                meta = {}
            self.meta_unsaved = meta.get("serial_number") != serial
            meta["serial_number"] = serial
            meta.setdefault("push_stamps", {})
            self.saved_stamps = dict(meta["push_stamps"])
            self.stamps_unsaved = False
            self.meta = meta
        return self.meta
