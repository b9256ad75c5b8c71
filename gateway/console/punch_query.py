"""Searching the buffer's punches for the console, read-only.

Each search opens its own SQLite connection in read-only mode (`mode=ro`): the console can
never change the buffer, whatever goes wrong, and it takes no part in the store's write lock.
WAL lets it read while the daemon writes; it sees the last commit. Columns are named through
`punchgate.sync.buffer_schema` (the one place the store's column names are spelled).

Days are the site's calendar days: a day range becomes a half-open UTC range, compared with
`utc_time` as text (the store writes it as `datetime.isoformat()` in UTC, so text order is time
order). Newest first; pages of `PAGE_SIZE`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from punchgate.sync import buffer_schema
from punchgate.sync.export_read import rosters

PAGE_SIZE = 50
MAX_PAGE = 10_000
SOURCES = ("poll", "live", "push", "manual")
_P = buffer_schema.punches.c


@dataclass(frozen=True)
class PunchFilter:
    device: str | None = None
    user_id: str | None = None
    day_from: dt.date | None = None
    day_to: dt.date | None = None
    source: str | None = None


@dataclass(frozen=True)
class PunchRow:
    device: str
    user_id: str
    utc_time: dt.datetime
    source: str
    local_time: str  # the terminal's own local time, as it reported it
    state: str
    verify: str
    flags: list[str]
    name: str = ""  # from the terminal's roster the gateway keeps (gateway/roster.py); "" if unknown


@dataclass(frozen=True)
class PunchPage:
    rows: list[PunchRow]
    total: int
    page: int
    pages: int


def _day_start(day: dt.date, tz: ZoneInfo) -> str:
    """The first instant of `day` in `tz`, as the text `utc_time` is compared with."""
    return dt.datetime.combine(day, dt.time(0), tz).astimezone(dt.UTC).isoformat()


def _where(flt: PunchFilter, tz: ZoneInfo) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    values: list[Any] = []
    if flt.device:
        clauses.append(f"{_P.device.name} = ?")
        values.append(flt.device)
    if flt.user_id:
        clauses.append(f"{_P.user_id.name} = ?")
        values.append(flt.user_id)
    if flt.source:
        clauses.append(f"{_P.source.name} = ?")
        values.append(flt.source)
    if flt.day_from:
        clauses.append(f"{_P.utc_time.name} >= ?")
        values.append(_day_start(flt.day_from, tz))
    if flt.day_to:
        clauses.append(f"{_P.utc_time.name} < ?")
        values.append(_day_start(flt.day_to + dt.timedelta(days=1), tz))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


def _named(value: Any) -> str:
    """`{"code": 1, "name": "check_out"}` -> `check_out`; a bare code as text."""
    if isinstance(value, dict):
        return str(value.get("name") or value.get("code", ""))
    return "" if value is None else str(value)


def _row(
    device: str,
    user_id: str,
    utc_time: str,
    source: str,
    payload: str,
    names: dict[str, dict[str, str]] | None = None,
) -> PunchRow:
    try:
        record: dict[str, Any] = json.loads(payload)
    except ValueError:
        record = {}
    when = dt.datetime.fromisoformat(utc_time.replace("Z", "+00:00"))
    flags = record.get("flags") or []
    return PunchRow(
        device=device,
        user_id=user_id,
        utc_time=when if when.tzinfo else when.replace(tzinfo=dt.UTC),
        source=source,
        local_time=str(record.get("local_time") or ""),
        state=_named(record.get("state")),
        verify=_named(record.get("verify")),
        flags=[str(f) for f in flags] if isinstance(flags, list) else [],
        name=(names or {}).get(device, {}).get(user_id, ""),
    )


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the buffer (FileNotFoundError when there is none)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no buffer at {path}")
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


def search(path: Path, flt: PunchFilter, tz: ZoneInfo, *, page: int = 1, size: int = PAGE_SIZE) -> PunchPage:
    """One page of punches matching `flt`, newest first, and how many match in all."""
    page = max(1, min(page, MAX_PAGE))
    where, values = _where(flt, tz)
    table = buffer_schema.punches.name
    columns = ", ".join(c.name for c in (_P.device, _P.user_id, _P.utc_time, _P.source, _P.payload))
    conn = connect_read_only(path)
    try:
        total = int(conn.execute(f"SELECT count(*) FROM {table}{where}", values).fetchone()[0])
        rows = conn.execute(
            f"SELECT {columns} FROM {table}{where} ORDER BY {_P.utc_time.name} DESC, {_P.pk.name} DESC "
            "LIMIT ? OFFSET ?",
            [*values, size, (page - 1) * size],
        ).fetchall()
        names = rosters(conn)  # the same names the payroll export shows
    finally:
        conn.close()
    pages = max(1, -(-total // size))
    found = [
        _row(device, user, utc, source, payload, names=names) for device, user, utc, source, payload in rows
    ]
    return PunchPage(found, total, page, pages)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    kind: str
    at: str
    account: str  # who did it, when the entry names someone
    summary: str  # the entry's other fields, short


@dataclass(frozen=True)
class AuditView:
    entries: int
    head_seq: int | None
    head_hash: str
    head_at: str
    actions: list[AuditEntry]


def _audit_entry(seq: int, kind: str, text: str) -> AuditEntry:
    try:
        data: dict[str, Any] = json.loads(text)
    except ValueError:
        data = {}
    who = next(
        (str(data[k]) for k in ("by", "entered_by", "decided_by", "account", "requester") if data.get(k)), ""
    )
    rest = {k: v for k, v in data.items() if k not in ("seq", "kind", "at")}
    summary = ", ".join(f"{k}={v}" for k, v in rest.items() if not isinstance(v, dict | list))[:300]
    return AuditEntry(int(seq), str(kind), str(data.get("at", "")), who, summary)


def audit_view(path: Path, *, actions: int = 30) -> AuditView:
    """The chain's length and head, and its latest administrative entries (not the punch ones)."""
    table, c = buffer_schema.audit.name, buffer_schema.audit.c
    conn = connect_read_only(path)
    try:
        count = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        head = conn.execute(
            f"SELECT {c.seq.name}, {c.kind.name}, {c.entry.name}, {c.hash.name} FROM {table} "
            f"ORDER BY {c.seq.name} DESC LIMIT 1"
        ).fetchone()
        rows = conn.execute(
            f"SELECT {c.seq.name}, {c.kind.name}, {c.entry.name} FROM {table} "
            f"WHERE {c.kind.name} NOT IN ('punches', 'purge', 'carried') ORDER BY {c.seq.name} DESC LIMIT ?",
            (actions,),
        ).fetchall()
    finally:
        conn.close()
    head_at = _audit_entry(head[0], head[1], head[2]).at if head else ""
    return AuditView(
        count,
        int(head[0]) if head else None,
        str(head[3]) if head else "",
        head_at,
        [_audit_entry(*row) for row in rows],
    )
