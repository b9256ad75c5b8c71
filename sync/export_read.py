"""The buffer side of an export: open it read-only, check the request against it, stream the rows.

Reads the buffer file read-only (`mode=ro`), so it runs beside the daemon: a WAL reader sees
the last commit and never blocks the writer. Every row comes from the record the broker
received (`payload`), so the export says exactly what central was sent. The range is in each
terminal's local time; the SQL filter is on the UTC column, widened by a day either side, and
the exact local-time test runs on each row. SQLite sorts (spilling to temporary files) and the
rows stream from the cursor, so memory stays flat however many there are.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from punchgate.sync import buffer_schema
from punchgate.sync.buffer_devices import ROSTER_SUFFIX
from punchgate.sync.export_model import ExportError, ExportQuery, Row

_PAD = dt.timedelta(days=1)  # UTC offsets are within +-14 h


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
        str(r[0]).removesuffix(ROSTER_SUFFIX)
        for r in conn.execute(f"SELECT device FROM {buffer_schema.device_meta.name}")
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
    """Names by device and user id from the terminals' rosters in device meta, where kept: the
    terminal's own meta, and `<device>/roster` (kept by the push listener from OPERLOG and by the
    pulled terminals' roster refresh, gateway/roster.py), which wins where both name a user.

    Accepted shapes (under "roster" or "users"): {user_id: name}, {user_id: {"name": ...}},
    or [{"user_id": ..., "name": ...}, ...]. Anything else: no names for that terminal."""
    found: dict[str, dict[str, str]] = {}
    # Own meta first, so a `<device>/roster` row read after it overrides.
    for key, data in conn.execute(
        f"SELECT device, data FROM {buffer_schema.device_meta.name} ORDER BY device LIKE '%{ROSTER_SUFFIX}'"
    ):
        device = str(key).removesuffix(ROSTER_SUFFIX)
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
            found.setdefault(device, {}).update(names)
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
