"""The normalised punch: what the buffer stores and the forwarder publishes.

Built once per raw record by `gateway.normalize.normalize_punch`; everything downstream
treats it as an immutable value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

Source = Literal["poll", "live", "manual", "push"]

# Time flags (docs/mqtt-contract.md, "Punch batches"). A punch may carry several.
FLAG_DST_FOLD = "dst_fold"  # local time happened twice; the first (earlier) instant was chosen
FLAG_DST_GAP = "dst_gap"  # local time never happened; shifted forward by the gap
FLAG_BEFORE_2000 = "before_2000"  # clock_invalid: dead clock battery or unset clock
FLAG_IN_FUTURE = "in_future"  # clock_invalid: more than a day ahead of the gateway


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualInfo:
    """Who added a make-up punch and why, and who approved it (docs/manual-punches.md).

    Times are aware UTC. `approved_by` is None when the site's `[manual] approval_required`
    is false (the punch entered the stream without a second person)."""

    entry_id: str  # the make-up entry's own uuid (part of the record id)
    reason_code: str
    reason: str
    entered_by: str
    entered_at: dt.datetime
    approved_by: str | None
    approved_at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Punch:
    """One attendance record, normalised, with its stable id (docs/mqtt-contract.md)."""

    id: str
    device: str  # the terminal's configured name
    device_serial: str
    user_id: str
    local_time: dt.datetime  # naive terminal-local time, as read
    utc_time: dt.datetime  # aware, UTC
    utc_offset_seconds: int
    state: int
    state_name: str | None
    verify: int
    verify_name: str | None
    work_code: int
    source: Source
    historical: bool
    flags: tuple[str, ...] = ()
    raw: bytes = b""
    manual: ManualInfo | None = None  # set on make-up punches (source "manual") only

    @property
    def quarantined(self) -> bool:
        """True when the timestamp cannot be right; stored and forwarded, but flagged."""
        return FLAG_BEFORE_2000 in self.flags or FLAG_IN_FUTURE in self.flags

    @property
    def utc_offset(self) -> str:
        """The offset as `+HH:MM`."""
        sign = "-" if self.utc_offset_seconds < 0 else "+"
        minutes = abs(self.utc_offset_seconds) // 60
        return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
