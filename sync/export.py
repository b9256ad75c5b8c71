"""Exports for payroll: the punches the buffer holds, as CSV or XLSX (docs/export.md).

Reads the buffer file read-only (`mode=ro`), so it runs beside the daemon: a WAL reader sees
the last commit and never blocks the writer. Every row comes from the record the broker
received (`payload`), so the export says exactly what central was sent.

* Range: `start` inclusive, `end` exclusive, in each terminal's local time (what payroll
  counts in). The SQL filter is on the UTC column, widened by a day either side, and the exact
  local-time test runs on each row.
* Memory stays flat however many rows: SQLite sorts (spilling to temporary files), rows stream
  from the cursor to the writer, openpyxl runs in write-only mode, and the summary keeps one
  small record per user and day.
* A failed export leaves no file behind: output goes to a temporary file beside the target and
  is renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from punchgate.sync import buffer_schema

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
WIDTHS = [14, 14, 10, 16, 20, 20, 9, 6, 12, 7, 12, 9, 8, 14, 18, 30, 16, 20, 16, 20, 34]
SUMMARY_HEADER = ["user_id", "name", "date", "first_in", "last_out", "count", "manual", "flags", "devices"]
SUMMARY_WIDTHS = [10, 16, 12, 20, 20, 7, 7, 14, 24]
_DATE_COLUMNS = {"local_time", "utc_time", "manual_entered_at", "manual_approved_at"}
_PAD = dt.timedelta(days=1)  # UTC offsets are within +-14 h
PROGRESS_EVERY = 5000


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


def connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ExportError(f"{path}: no such buffer file")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA temp_store = FILE")  # the sort spills to disk, not to memory
    return conn


# --- checking the request -------------------------------------------------------------------------
def check(conn: sqlite3.Connection, query: ExportQuery, *, known_devices: Sequence[str] = ()) -> None:
    """ExportError naming what is wrong: an empty or reversed range, an unknown terminal, or a
    range wholly outside what the buffer holds."""
    if query.start >= query.end:
        raise ExportError(f"--from {query.start.isoformat()} is not before --to {query.end.isoformat()}")
    p = buffer_schema.punches
    known = set(known_devices) | {
        str(r[0]) for r in conn.execute(f"SELECT device FROM {buffer_schema.device_meta.name}")
    }
    for device in query.devices:
        if device in known:
            continue
        if (
            conn.execute(f"SELECT 1 FROM {p.name} WHERE {p.c.device} = ? LIMIT 1", (device,)).fetchone()
            is None
        ):
            names = ", ".join(sorted(known)) or "none"
            raise ExportError(
                f"unknown terminal {device!r}: the buffer holds none of its punches (terminals: {names})"
            )
    low, high = conn.execute(f"SELECT min({p.c.utc_time}), max({p.c.utc_time}) FROM {p.name}").fetchone()
    if low is None:
        raise ExportError("the buffer holds no punches")
    first = dt.datetime.fromisoformat(low).replace(tzinfo=None)
    last = dt.datetime.fromisoformat(high).replace(tzinfo=None)
    if query.end <= first - _PAD or query.start >= last + _PAD:
        raise ExportError(
            f"the range {query.start.isoformat()} .. {query.end.isoformat()} is outside what the buffer "
            f"holds ({first.isoformat()} .. {last.isoformat()} UTC; older punches are purged after "
            "[buffer] retention_days)"
        )


def held_since(conn: sqlite3.Connection) -> dt.datetime | None:
    """The oldest punch the buffer holds (UTC, naive); None when it holds none."""
    p = buffer_schema.punches
    (low,) = conn.execute(f"SELECT min({p.c.utc_time}) FROM {p.name}").fetchone()
    return None if low is None else dt.datetime.fromisoformat(low).replace(tzinfo=None)


# --- reading ------------------------------------------------------------------------------------
def rosters(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """Names by device and user id from the terminals' rosters in device meta, where kept.

    Accepted shapes (under "roster" or "users"): {user_id: name}, {user_id: {"name": ...}},
    or [{"user_id": ..., "name": ...}, ...]. Anything else: no names for that terminal."""
    found: dict[str, dict[str, str]] = {}
    for device, data in conn.execute(f"SELECT device, data FROM {buffer_schema.device_meta.name}"):
        try:
            meta = json.loads(data)
        except ValueError:
            continue
        roster = meta.get("roster", meta.get("users")) if isinstance(meta, dict) else None
        names: dict[str, str] = {}
        if isinstance(roster, dict):
            for user, value in roster.items():
                name = value.get("name") if isinstance(value, dict) else value
                if isinstance(name, str):
                    names[str(user)] = name
        elif isinstance(roster, list):
            for item in roster:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    names[str(item.get("user_id", item.get("id", "")))] = item["name"]
        if names:
            found[str(device)] = names
    return found


def _naive_utc(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC).replace(tzinfo=None)


def count(conn: sqlite3.Connection, query: ExportQuery) -> int:
    """Rows the SQL filter lets through (an upper bound of the rows exported, for progress)."""
    where, params = _where(query)
    return int(
        conn.execute(f"SELECT count(*) FROM {buffer_schema.punches.name} WHERE {where}", params).fetchone()[0]
    )


def _where(query: ExportQuery) -> tuple[str, list[Any]]:
    c = buffer_schema.punches.c
    low = (query.start - _PAD).isoformat()
    high = (query.end + _PAD).isoformat()
    where, params = [f"{c.utc_time} >= ?", f"{c.utc_time} < ?"], [low, high]
    if query.devices:
        where.append(f"{c.device} IN ({', '.join('?' * len(query.devices))})")
        params += list(query.devices)
    if query.users:
        where.append(f"{c.user_id} IN ({', '.join('?' * len(query.users))})")
        params += list(query.users)
    return " AND ".join(where), params


def rows(conn: sqlite3.Connection, query: ExportQuery, names: dict[str, dict[str, str]]) -> Iterator[Row]:
    """The punches in range, by terminal and then time, oldest first."""
    p = buffer_schema.punches
    where, params = _where(query)
    cursor = conn.execute(
        f"SELECT {p.c.device}, {p.c.payload} FROM {p.name} WHERE {where}"
        f" ORDER BY {p.c.device}, {p.c.utc_time}, {p.c.pk}",
        params,
    )
    start, end = query.start, query.end
    while batch := cursor.fetchmany(1000):
        for device, payload in batch:
            record = json.loads(payload)
            local = dt.datetime.fromisoformat(record["local_time"])
            if not start <= local < end:
                continue
            manual = record.get("manual") or {}
            user = record["user_id"]
            yield Row(
                device,
                {
                    "device": device,
                    "serial": record["serial"],
                    "user_id": user,
                    "name": names.get(device, {}).get(user, ""),
                    "local_time": local,
                    "utc_time": _naive_utc(record["utc_time"]),
                    "utc_offset": record["utc_offset"],
                    "state": record["state"]["code"],
                    "state_name": record["state"]["name"] or "",
                    "verify": record["verify"]["code"],
                    "verify_name": record["verify"]["name"] or "",
                    "work_code": record["work_code"],
                    "source": record["source"],
                    "flags": " ".join(record["flags"]),
                    "manual_reason_code": manual.get("reason_code", ""),
                    "manual_reason": manual.get("reason", ""),
                    "manual_entered_by": manual.get("entered_by", ""),
                    "manual_entered_at": _naive_utc(manual.get("entered_at")),
                    "manual_approved_by": manual.get("approved_by") or "",
                    "manual_approved_at": _naive_utc(manual.get("approved_at")),
                    "record_id": record["id"],
                },
            )


# --- the summary: per user and day ------------------------------------------------------------------
@dataclass
class _Day:
    name: str = ""
    first_in: dt.datetime | None = None
    first_any: dt.datetime | None = None
    last_out: dt.datetime | None = None
    last_any: dt.datetime | None = None
    count: int = 0
    manual: int = 0
    flags: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)


class Summary:
    """Per user and local day: first check-in, last check-out, punches, make-up punches, flags.

    First in is the earliest `check_in` (the earliest punch of any state when there is none);
    last out the latest `check_out` (the latest punch, when there is none and the day has more
    than one). A day is the terminal-local calendar day."""

    def __init__(self) -> None:
        self.days: dict[tuple[str, dt.date], _Day] = {}

    def add(self, row: Row) -> None:
        v = row.values
        local: dt.datetime = v["local_time"]
        day = self.days.setdefault((v["user_id"], local.date()), _Day())
        day.name = day.name or v["name"]
        day.count += 1
        day.manual += v["source"] == "manual"
        day.devices.add(row.device)
        if v["flags"]:
            day.flags.update(v["flags"].split())
        day.first_any = local if day.first_any is None else min(day.first_any, local)
        day.last_any = local if day.last_any is None else max(day.last_any, local)
        if v["state_name"] == "check_in":
            day.first_in = local if day.first_in is None else min(day.first_in, local)
        elif v["state_name"] == "check_out":
            day.last_out = local if day.last_out is None else max(day.last_out, local)

    def rows(self) -> Iterator[list[Any]]:
        for (user, date), day in sorted(
            self.days.items(), key=lambda item: (_user_key(item[0][0]), item[0][1])
        ):
            last_out = day.last_out or (day.last_any if day.count > 1 else None)
            yield [
                user,
                day.name,
                date,
                day.first_in or day.first_any,
                last_out,
                day.count,
                day.manual,
                " ".join(sorted(day.flags)),
                " ".join(sorted(day.devices)),
            ]


def _user_key(user: str) -> tuple[int, int | str]:
    return (0, int(user)) if user.isdigit() else (1, user)


# --- writing ------------------------------------------------------------------------------------
def _csv_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _utc_csv(values: dict[str, Any]) -> list[Any]:
    out = []
    for name in HEADER:
        value = values[name]
        if isinstance(value, dt.datetime) and name != "local_time":
            out.append(value.isoformat() + "Z")
        else:
            out.append(_csv_value("" if value is None else value))
    return out


def write_csv(source: Iterator[Row], target: Any, progress: Progress | None = None) -> int:
    """CSV, UTF-8 with a byte order mark (so Excel reads names right), ISO 8601 times
    (local without offset, UTC with Z). Returns the rows written."""
    target.write("\ufeff")
    writer = csv.writer(target, lineterminator="\r\n")
    writer.writerow(HEADER)
    written = 0
    for row in source:
        writer.writerow(_utc_csv(row.values))
        written += 1
        if progress is not None and written % PROGRESS_EVERY == 0:
            progress(written)
    return written


def _sheet_title(device: str, used: set[str]) -> str:
    base = device[:31]
    title, n = base, 1
    while title.lower() in used or title.lower() == "summary":
        n += 1
        title = f"{base[: 31 - len(str(n)) - 1]}~{n}"
    used.add(title.lower())
    return title


def write_xlsx(source: Iterator[Row], path: Path, progress: Progress | None = None) -> ExportResult:
    """XLSX in openpyxl's write-only mode: a summary sheet first, then a sheet per terminal;
    frozen header rows, column widths, times as Excel dates (local, and UTC in UTC)."""
    from openpyxl import Workbook  # type: ignore[import-untyped]  # no type information shipped
    from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
    from openpyxl.styles import Font  # type: ignore[import-untyped]

    book = Workbook(write_only=True)
    bold = Font(bold=True)

    def sheet(title: str, header: list[str], widths: list[int]) -> Any:
        ws = book.create_sheet(title)
        ws.freeze_panes = "A2"
        for index, width in enumerate(widths):
            ws.column_dimensions[_column_letter(index)].width = width
        cells = []
        for name in header:
            cell = WriteOnlyCell(ws, value=name)
            cell.font = bold
            cells.append(cell)
        ws.append(cells)
        return ws

    summary_ws = sheet("Summary", SUMMARY_HEADER, SUMMARY_WIDTHS)
    summary = Summary()
    result = ExportResult(path)
    used: set[str] = set()
    current: str | None = None
    ws: Any = None
    for row in source:
        if row.device != current:
            current = row.device
            ws = sheet(_sheet_title(current, used), HEADER, WIDTHS)
            result.devices.append(current)
        ws.append([row.values[name] for name in HEADER])
        summary.add(row)
        result.rows += 1
        if progress is not None and result.rows % PROGRESS_EVERY == 0:
            progress(result.rows)
    for line in summary.rows():
        summary_ws.append(line)
        result.summary_rows += 1
    book.save(path)
    return result


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def check_target(out: Path) -> None:
    """ExportError when `out` cannot be written (checked before anything is read)."""
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ExportError(f"{out} is a directory: name a file")
    if not folder.is_dir():
        raise ExportError(f"cannot write {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"cannot write {out}: no permission to write in {folder}")
    if out.exists() and not os.access(out, os.W_OK):
        raise ExportError(f"cannot write {out}: the file is not writable")


def export(
    buffer: Path,
    query: ExportQuery,
    out: Path,
    fmt: Format,
    *,
    known_devices: Sequence[str] = (),
    progress: Progress | None = None,
) -> ExportResult:
    """Write the export to `out` (replaced only once complete); ExportError on bad input."""
    check_target(out)
    conn = connect(buffer)
    try:
        conn.execute("BEGIN")  # one snapshot: the export is consistent even while punches arrive
        check(conn, query, known_devices=known_devices)
        names = rosters(conn)
        fd, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        temp = Path(temp_name)
        try:
            source = rows(conn, query, names)
            if fmt == "csv":
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    result = ExportResult(out, rows=write_csv(source, handle, progress))
            else:
                os.close(fd)
                result = write_xlsx(source, temp, progress)
                result.path = out
            os.replace(temp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise ExportError(f"{buffer}: cannot read the buffer: {exc}") from None
    finally:
        conn.close()
    return result
