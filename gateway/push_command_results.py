"""Results push terminals post to devicecmd, matched to the commands they answer.

`ResultRecorder.apply` gives a command with its result recorded: `ok` or `failed` from the
Return code (with what the code means), the reply and INFO's details; the text redacted now
that the command is final. A result for a command that already expired is kept as its
`late_result` (the status stays `expired`); a second result for a finished command changes
nothing. A reply that does not name the command sent is logged (rate-limited). Results are
counted by outcome (`ok`, `failed`, `unknown` id, `duplicate`, `late`) for /metrics.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import structlog

from punchgate.drivers.zk_push import commands
from punchgate.gateway.push_command_records import FINAL, StoredCommand, command_id, iso_time
from punchgate.gateway.ratelimit_log import RateLimitedLog

log = structlog.get_logger(__name__)

RESULT_OUTCOMES = ("ok", "failed", "unknown", "duplicate", "late")

_EXPECTED_REPLY: dict[str, tuple[str, ...]] = {
    "info": ("INFO",),
    "check": ("CHECK",),
    "reboot": ("REBOOT",),
    "set_time": ("SET", "SET OPTION", "SET OPTIONS"),
    "user_update": ("DATA", "DATA UPDATE"),
    "user_delete": ("DATA", "DATA DELETE"),
    "clear_log": ("CLEAR", "CLEAR LOG", "CLEAR_LOG"),  # the emulator answers CLEAR_LOG
}


class ResultRecorder:
    """Applies results to commands and counts them (see the module docstring)."""

    def __init__(self, counts: Counter[str], limited: RateLimitedLog) -> None:
        self.counts = counts
        self.limited = limited

    def apply(
        self, device: str, entry: StoredCommand, result: commands.Result, now: float
    ) -> StoredCommand | None:
        """The entry with this result recorded, or None when it changes nothing (a duplicate)."""
        shown = command_id(device, entry.wire_id)
        late = {
            "returned": result.returned,
            "meaning": commands.meaning(result.returned),
            "at": iso_time(now),
        }
        if entry.status == "expired" and entry.late_result is None:
            self.counts["late"] += 1
            log.warning("push_command_result_after_expiry", device=device, id=shown, **late)
            return dataclasses.replace(entry, late_result=late)
        if entry.status in FINAL:
            self.counts["duplicate"] += 1
            self.limited.info(
                "push_command_result_duplicate", key="push_command_result_duplicate", device=device, id=shown
            )
            return None
        outcome = commands.outcome(result.returned)
        self.counts[outcome] += 1
        expected = _EXPECTED_REPLY[entry.kind]
        if result.command and result.command.strip().upper() not in expected:
            self.limited.warning(
                "push_command_result_mismatch",
                key="push_command_result_mismatch",
                device=device,
                id=shown,
                kind=entry.kind,
                reply=result.command,
            )
        (log.info if outcome == "ok" else log.warning)(
            "push_command_done",
            device=device,
            id=shown,
            command=commands.redact(entry.text),
            status=outcome,
            returned=result.returned,
            meaning=commands.meaning(result.returned),
        )
        return dataclasses.replace(
            entry,
            text=commands.redact(entry.text),
            status=outcome,
            finished_at=now,
            returned=result.returned,
            meaning=commands.meaning(result.returned),
            reply=result.command,
            details=dict(result.details),
        )

    def unknown(self, device: str, results: Sequence[commands.Result]) -> None:
        """Results no command of this queue answers: ignored, counted, logged (rate-limited)."""
        for result in results:
            self.counts["unknown"] += 1
            self.limited.warning(
                "push_command_result_unknown",
                key="push_command_result_unknown",
                device=device,
                id=result.id,
                returned=result.returned,
                reply=result.command,
            )
