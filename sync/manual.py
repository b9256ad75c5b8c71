"""Make-up punches in the buffer: the `[manual]` rules, the entries, and the checks (docs/manual-punches.md).

A make-up punch is entered for a terminal (or the site's virtual terminal) by a named person,
with a reason; a different person approves or rejects it. Only an approved entry becomes a
punch (source `manual`, with a `manual` object), and that happens in the transaction that
records the approval, so the stream never holds an unapproved make-up punch.

Invariants (the store runs every check inside the write transaction that inserts or decides,
so two requests can never both pass a check that only one of them may pass):

* an entry never collides with a punch: one for a time at which the buffer already holds a
  punch of that user at that terminal (the same minute, plus `conflict_minutes` either side),
  or a pending or approved entry of that user there, is refused with a sentence saying which;
  the check runs again at approval (the terminal may have delivered the punch meanwhile);
* the approver or rejecter is never the person who entered it (names compared without case
  and surrounding spaces);
* an entry is decided once: pending -> approved or rejected, never back.

Functions take the caller's SQLAlchemy connection; `punchgate.sync.store.Store` owns the
transactions, the write lock and the audit entries that go with each change.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pydantic import Field, field_validator

from punchgate.sync import buffer_schema
from punchgate.sync.settings import Strict

Status = Literal["pending", "approved", "rejected"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "rejected")
DEFAULT_REASONS = ["forgot_to_punch", "recognition_failed", "terminal_fault", "working_off_site", "other"]
_REASON = re.compile(r"[a-z0-9][a-z0-9_]{0,39}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the terminals' name pattern (drivers.config)

_M = buffer_schema.manual_punches
MC = _M.c
_P = buffer_schema.punches.c


class ManualSettings(Strict):
    """`[manual]`: the rules for make-up punches."""

    approval_required: bool = Field(
        True,
        description="a make-up punch enters the stream only once a second person approved it; "
        "false: at once, as entered",
    )
    max_days_back: int = Field(
        31, ge=0, le=3660, description="how many days back from today a make-up punch may be dated"
    )
    max_per_user_per_month: int = Field(
        3,
        ge=0,
        le=1000,
        description="make-up punches (pending or approved) per user and calendar month; 0: no limit",
    )
    conflict_minutes: int = Field(
        1,
        ge=0,
        le=1440,
        description="refuse a make-up punch when the user already has a punch at that terminal within "
        "the same minute or this many minutes either side",
    )
    reasons: list[str] = Field(
        list(DEFAULT_REASONS),
        description="the reason categories a make-up punch must name (snake_case)",
    )
    virtual_terminal: str = Field(
        "",
        description="name of a site-level virtual terminal for make-up punches not made at any "
        "terminal (e.g. working off site); empty: none",
    )

    @field_validator("reasons")
    @classmethod
    def _reason_codes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('name at least one reason category, e.g. ["forgot_to_punch", "other"]')
        for code in value:
            if not _REASON.fullmatch(code):
                raise ValueError(
                    f"{code!r} is not a reason code: write 1-40 lowercase letters, digits and '_'"
                )
        if len(set(value)) != len(value):
            raise ValueError("a reason category is listed twice")
        return value

    @field_validator("virtual_terminal")
    @classmethod
    def _terminal_name(cls, value: str) -> str:
        if value and not _NAME.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit")
        return value


class ManualRefused(Exception):
    """A make-up punch (or its decision) breaks a rule; the message says which and what to do."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status the API answers with


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualEntry:
    """One make-up punch as entered (and, once decided, as decided). Times: ISO 8601 text."""

    entry_id: str
    device: str
    serial: str
    user_id: str
    local_time: str  # terminal-local, no offset, seconds
    utc_time: str  # as punches.utc_time writes it: 2026-03-02T07:00:00+00:00
    state: int
    reason_code: str
    reason: str
    entered_by: str
    entered_at: str  # UTC with Z
    status: Status = "pending"
    decided_by: str | None = None
    decided_at: str | None = None
    note: str | None = None
    punch_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def entered(self) -> dict[str, Any]:
        """What the `manual_entered` audit entry records (the fields fixed at entry)."""
        fields = self.as_dict()
        for key in ("status", "decided_by", "decided_at", "note", "punch_id"):
            del fields[key]
        return fields

    def decided(self) -> dict[str, Any]:
        """What a `manual_approved` / `manual_rejected` audit entry records."""
        return {
            "entry_id": self.entry_id,
            "status": self.status,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "note": self.note,
            "punch_id": self.punch_id,
        }


COLUMNS = tuple(c.name for c in _M.columns)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM {_M.name}"
_INSERT = f"INSERT INTO {_M.name} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_DECIDE = (
    f"UPDATE {_M.name} SET {MC.status.name} = ?, {MC.decided_by.name} = ?, {MC.decided_at.name} = ?,"
    f" {MC.note.name} = ?, {MC.punch_id.name} = ? WHERE {MC.entry_id} = ? AND {MC.status} = 'pending'"
)


def _entry(row: Sequence[Any]) -> ManualEntry:
    return ManualEntry(**dict(zip(COLUMNS, row, strict=True)))


def same_person(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def utc_text(when: dt.datetime) -> str:
    """An instant the way punches.utc_time is written (`Punch.utc_time.isoformat()`)."""
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat()


# --- reading ------------------------------------------------------------------------------------
def get_entry(conn: Any, entry_id: str) -> ManualEntry | None:
    row = conn.exec_driver_sql(f"{_SELECT} WHERE {MC.entry_id} = ?", (entry_id,)).fetchone()
    return None if row is None else _entry(row)


def list_entries(
    conn: Any,
    *,
    status: Status | None = None,
    device: str | None = None,
    user_id: str | None = None,
    limit: int = 1000,
) -> list[ManualEntry]:
    """Entries, newest entered first, filtered by whatever is given."""
    where, params = [], []
    for column, value in ((MC.status, status), (MC.device, device), (MC.user_id, user_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"{_SELECT}{clause} ORDER BY {MC.entered_at} DESC, {MC.entry_id} LIMIT ?"
    return [_entry(row) for row in conn.exec_driver_sql(sql, (*params, limit))]


def conflict(conn: Any, entry: ManualEntry, minutes: int) -> str | None:
    """Why `entry` collides with what the buffer holds (a sentence), or None.

    The window: the entry's minute, widened by `minutes` either side."""
    at = dt.datetime.fromisoformat(entry.utc_time).replace(second=0)
    low = utc_text(at - dt.timedelta(minutes=minutes))
    high = utc_text(at + dt.timedelta(minutes=minutes + 1))  # exclusive
    punch = conn.exec_driver_sql(
        f"SELECT {_P.id}, {_P.utc_time}, {_P.source} FROM {buffer_schema.punches.name}"
        f" WHERE {_P.device} = ? AND {_P.user_id} = ? AND {_P.utc_time} >= ? AND {_P.utc_time} < ?"
        f" ORDER BY {_P.utc_time} LIMIT 1",
        (entry.device, entry.user_id, low, high),
    ).fetchone()
    if punch is not None:
        ident, utc_time, source = punch
        what = "a make-up punch" if source == "manual" else "a punch"
        return (
            f"terminal {entry.device!r} already holds {what} of user {entry.user_id!r} at "
            f"{utc_time} UTC (record {ident}), within {minutes} minute(s) of {entry.local_time} local: "
            "a make-up punch is only for a punch that is missing"
        )
    other = conn.exec_driver_sql(
        f"SELECT {MC.entry_id}, {MC.local_time}, {MC.status} FROM {_M.name} WHERE {MC.device} = ?"
        f" AND {MC.user_id} = ? AND {MC.status} != 'rejected' AND {MC.entry_id} != ?"
        f" AND {MC.utc_time} >= ? AND {MC.utc_time} < ? LIMIT 1",
        (entry.device, entry.user_id, entry.entry_id, low, high),
    ).fetchone()
    if other is not None:
        return (
            f"user {entry.user_id!r} already has a {other[2]} make-up punch at terminal {entry.device!r} "
            f"at {other[1]} local (entry {other[0]}): decide that one instead"
        )
    return None


def month_count(conn: Any, user_id: str, local_time: str) -> int:
    """Pending and approved make-up punches of `user_id` in the calendar month of `local_time`."""
    month = local_time[:7]  # YYYY-MM
    return int(
        conn.exec_driver_sql(
            f"SELECT count(*) FROM {_M.name} WHERE {MC.user_id} = ? AND {MC.status} != 'rejected'"
            f" AND {MC.local_time} >= ? AND {MC.local_time} < ?",
            (user_id, month, month + "~"),
        ).scalar_one()
    )


# --- writing ------------------------------------------------------------------------------------
def check_new(conn: Any, entry: ManualEntry, settings: ManualSettings) -> None:
    """The checks that depend on what the buffer holds; ManualRefused when one fails."""
    problem = conflict(conn, entry, settings.conflict_minutes)
    if problem:
        raise ManualRefused(problem)
    limit = settings.max_per_user_per_month
    if limit:
        used = month_count(conn, entry.user_id, entry.local_time)
        if used >= limit:
            raise ManualRefused(
                f"user {entry.user_id!r} already has {used} make-up punches in {entry.local_time[:7]} "
                f"([manual] max_per_user_per_month = {limit})"
            )


def insert_entry(conn: Any, entry: ManualEntry) -> None:
    conn.exec_driver_sql(_INSERT, tuple(getattr(entry, name) for name in COLUMNS))


def decide(conn: Any, decided: ManualEntry) -> None:
    """Record a decision on a pending entry; ManualRefused when it is no longer pending."""
    changed = conn.exec_driver_sql(
        _DECIDE,
        (
            decided.status,
            decided.decided_by,
            decided.decided_at,
            decided.note,
            decided.punch_id,
            decided.entry_id,
        ),
    ).rowcount
    if changed != 1:
        raise ManualRefused(f"entry {decided.entry_id} is not pending any more")


def check_decision(entry: ManualEntry | None, entry_id: str, by: str) -> ManualEntry:
    """The pending entry a person may decide; ManualRefused (404, 409, 403) otherwise."""
    if entry is None:
        raise ManualRefused(f"no make-up punch {entry_id!r}", status=404)
    if entry.status != "pending":
        raise ManualRefused(
            f"make-up punch {entry_id} was already {entry.status} by {entry.decided_by or 'nobody'} "
            f"at {entry.decided_at}"
        )
    if same_person(by, entry.entered_by):
        raise ManualRefused(
            f"{by!r} entered make-up punch {entry_id}: a different person must approve or reject it",
            status=403,
        )
    return entry


def with_decision(
    entry: ManualEntry, status: Status, by: str | None, at: str, note: str | None, punch_id: str | None
) -> ManualEntry:
    return replace(entry, status=status, decided_by=by, decided_at=at, note=note, punch_id=punch_id)
