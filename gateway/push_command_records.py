"""One push command as the queue stores it (`StoredCommand`) and as its API shows it (`CommandStatus`).

A command's id is `<device>/<n>`, n being the number the terminal sees in `C:<n>:`
(`command_id`, `split_command_id`). Its status is `queued`, `sent`, then one final status
(`ok`, `failed`, `expired`); `OPEN` and `FINAL` group them. `StoredCommand` is what the buffer
holds (device meta `<device>/commands`), except `sent_beat`, which only this process knows.
`CommandStatus` shows its text with passwords and card numbers masked, and `as_dict` gives
the API's JSON with ISO 8601 times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from punchgate.drivers.zk_push import commands

Status = Literal["queued", "sent", "ok", "failed", "expired"]
STATUSES: tuple[Status, ...] = ("queued", "sent", "ok", "failed", "expired")
OPEN: frozenset[str] = frozenset({"queued", "sent"})
FINAL: frozenset[str] = frozenset({"ok", "failed", "expired"})


def iso_time(when: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (`…Z`); None stays None."""
    if when is None:
        return None
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def command_id(device: str, wire_id: int) -> str:
    return f"{device}/{wire_id}"


def split_command_id(value: str) -> tuple[str, int] | None:
    device, sep, number = value.rpartition("/")
    if not sep or not device or not number.isdigit() or len(number) > 18:
        return None
    return device, int(number)


@dataclass(frozen=True, slots=True)
class StoredCommand:
    wire_id: int
    text: str  # canonical (commands.parse); redacted once final
    kind: commands.Kind
    status: Status
    queued_at: float
    expires_at: float
    sends: int = 0
    sent_at: float | None = None
    finished_at: float | None = None
    returned: int | None = None
    meaning: str = ""
    reply: str = ""  # the CMD= the terminal echoed
    details: dict[str, str] = field(default_factory=dict)
    late_result: dict[str, Any] | None = None
    sent_beat: int = 0  # not stored: the heartbeat (of this process) that last carried it

    def stored(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["sent_beat"]
        return data

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> StoredCommand:
        known = {f.name for f in dataclasses.fields(cls)} - {"sent_beat"}
        entry = cls(**{k: v for k, v in data.items() if k in known})
        if entry.status not in STATUSES or entry.kind not in commands.KINDS:
            raise ValueError(f"status {entry.status!r} / kind {entry.kind!r}")
        return entry


@dataclass(frozen=True, slots=True)
class CommandStatus:
    """One command as the API shows it (times are unix seconds; `as_dict` gives ISO 8601)."""

    command_id: str
    device: str
    wire_id: int
    command: str  # the text, with passwords and card numbers masked
    kind: commands.Kind
    status: Status
    queued_at: float
    expires_at: float
    sends: int
    sent_at: float | None
    finished_at: float | None
    returned: int | None
    meaning: str
    reply: str
    details: dict[str, str]
    late_result: dict[str, Any] | None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.command_id,
            "device": self.device,
            "wire_id": self.wire_id,
            "command": self.command,
            "kind": self.kind,
            "status": self.status,
            "queued_at": iso_time(self.queued_at),
            "expires_at": iso_time(self.expires_at),
            "sends": self.sends,
            "sent_at": iso_time(self.sent_at),
            "finished_at": iso_time(self.finished_at),
            "returned": self.returned,
            "meaning": self.meaning,
            "reply": self.reply,
            "details": self.details,
            "late_result": self.late_result,
        }


def command_status(device: str, entry: StoredCommand) -> CommandStatus:
    return CommandStatus(
        command_id=command_id(device, entry.wire_id),
        device=device,
        wire_id=entry.wire_id,
        command=commands.redact(entry.text),
        kind=entry.kind,
        status=entry.status,
        queued_at=entry.queued_at,
        expires_at=entry.expires_at,
        sends=entry.sends,
        sent_at=entry.sent_at,
        finished_at=entry.finished_at,
        returned=entry.returned,
        meaning=entry.meaning,
        reply=entry.reply,
        details=dict(entry.details),
        late_result=entry.late_result,
    )
