"""One push terminal's command queue, as kept in memory and stored in the buffer.

A `CommandBook` holds the terminal's commands by wire id (ascending), the next id and the
lock its changes take. It is stored whole, as device meta `<device>/commands`
(`META_SUFFIX`): `updated` gives what to store after a change, dropping the oldest finished
commands beyond `MAX_FINISHED_KEPT`, and `restore` reads it back at start-up (an unreadable
command is logged and skipped). `expired` turns open commands past their `expires_at` into
expired ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import structlog

from punchgate.drivers.zk_push import commands
from punchgate.drivers.zk_push.backend import PushTerminal
from punchgate.gateway.push_command_records import FINAL, OPEN, StoredCommand, command_id

log = structlog.get_logger(__name__)

META_SUFFIX = "/commands"  # device meta key of a terminal's queue: `<device>/commands`
MAX_FINISHED_KEPT = 200  # finished commands remembered per terminal (the newest)


@dataclass
class CommandBook:
    """One terminal's queue: entries by wire id (ascending), the next id, its lock."""

    terminal: PushTerminal
    entries: dict[int, StoredCommand] = field(default_factory=dict)
    next_id: int = 1
    beats: int = 0  # heartbeats answered by this process
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def meta_key(self) -> str:
        return self.terminal.name + META_SUFFIX

    def open_entries(self) -> list[StoredCommand]:
        return [e for e in self.entries.values() if e.status in OPEN]

    def restore(self, data: dict[str, Any]) -> None:
        """Take the stored queue (device meta) as this book's entries and next id."""
        name = self.terminal.name
        for item in data.get("commands", []) if isinstance(data.get("commands"), list) else []:
            try:
                entry = StoredCommand.from_stored(item)
            except (TypeError, ValueError) as exc:
                log.error("push_command_unreadable", device=name, error=str(exc)[:200])
                continue
            self.entries[entry.wire_id] = entry
        self.entries = dict(sorted(self.entries.items()))
        stored_next = data.get("next_id")
        self.next_id = max(
            stored_next if isinstance(stored_next, int) else 1, max(self.entries, default=0) + 1
        )

    def updated(
        self, changed: dict[int, StoredCommand], next_id: int | None = None
    ) -> tuple[dict[int, StoredCommand], int]:
        """The entries with `changed` applied, the oldest finished beyond MAX_FINISHED_KEPT
        dropped, and the next id; the book itself stays as it is until they are stored."""
        entries = dict(sorted({**self.entries, **changed}.items()))
        finished = [e for e in entries.values() if e.status in FINAL]
        finished.sort(key=lambda e: (e.finished_at or 0.0, e.wire_id))
        for old in finished[:-MAX_FINISHED_KEPT] if len(finished) > MAX_FINISHED_KEPT else []:
            del entries[old.wire_id]
        return entries, self.next_id if next_id is None else next_id

    def stored(self, entries: dict[int, StoredCommand], next_id: int) -> dict[str, Any]:
        """What the buffer keeps under `meta_key`."""
        return {
            "serial_number": self.terminal.serial_number,
            "next_id": next_id,
            "commands": [e.stored() for e in entries.values()],
        }

    def expired(self, now: float) -> dict[int, StoredCommand]:
        """The open commands past their expires_at, as expired (each logged)."""
        changed: dict[int, StoredCommand] = {}
        for entry in self.entries.values():
            if entry.status in OPEN and entry.expires_at <= now:
                changed[entry.wire_id] = dataclasses.replace(
                    entry,
                    text=commands.redact(entry.text),
                    status="expired",
                    finished_at=now,
                    meaning="no result before it expired"
                    if entry.sends
                    else "never sent: the terminal did not ask in time",
                )
                log.warning(
                    "push_command_expired",
                    device=self.terminal.name,
                    id=command_id(self.terminal.name, entry.wire_id),
                    command=commands.redact(entry.text),
                    sends=entry.sends,
                )
        return changed
