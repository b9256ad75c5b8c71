"""The values an export passes around: the request, one exported row, the outcome, the error.

`HEADER` names a row's columns in the order both file formats write them; `parse_bound` reads
a range bound as the command line and the console take it (terminal-local, no offset).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Format = Literal["csv", "xlsx"]
Progress = Callable[[int], None]  # rows written so far

HEADER = [
    "device",
    "serial",
    "user_id",
    "name",
    "local_time",
    "utc_time",
    "utc_offset",
    "state",
    "state_name",
    "verify",
    "verify_name",
    "work_code",
    "source",
    "flags",
    "manual_reason_code",
    "manual_reason",
    "manual_entered_by",
    "manual_entered_at",
    "manual_approved_by",
    "manual_approved_at",
    "record_id",
]
PROGRESS_EVERY = 5000  # rows between two progress calls


class ExportError(Exception):
    """Bad input or an unusable buffer or target; the message names the problem."""


@dataclass(frozen=True, slots=True)
class ExportQuery:
    start: dt.datetime  # terminal-local, naive, inclusive
    end: dt.datetime  # terminal-local, naive, exclusive
    devices: Sequence[str] = ()
    users: Sequence[str] = ()


@dataclass
class ExportResult:
    path: Path
    rows: int = 0
    devices: list[str] = field(default_factory=list)
    summary_rows: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    """One punch as exported."""

    device: str
    values: dict[str, Any]  # keyed by HEADER; times as naive datetimes (UTC ones in UTC)


def parse_bound(text: str, *, end: bool) -> dt.datetime:
    """`2026-03-01` or `2026-03-01T08:00`: a date is the whole day (an end date includes it)."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            start = dt.datetime.combine(day, dt.time())
            return start + dt.timedelta(days=1) if end else start
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ExportError(f"{text!r} is not a date (2026-03-01) or a local time (2026-03-01T08:00)") from None
    if when.tzinfo is not None:
        raise ExportError(f"{text!r}: write terminal-local time, without an offset")
    return when
