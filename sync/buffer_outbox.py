"""The punches table as an outbox: punches in (dedupe, insert), and out (pending reads,
delivery marks, replay, purge). Functions take the caller's connection; the store owns the
transactions, the write lock and the pending count.

Design and invariants:

* A punch is stored once: `id` is unique in the file (unique index). `known_ids` lets the
  store skip known punches before inserting, so a re-read terminal log is a no-op.
* `pk` is insertion order and "oldest first" means lowest pk. The forwarder drains with a
  cursor (`pending_batch(after=last pk)`), so a row must never change its pk.
* `delivered_at IS NULL` is what "pending" means. `mark_delivered` changes only rows still
  pending and returns exactly how many it changed; `requeue_delivered` is its inverse for
  replay. The store adjusts its pending count by those return values.
* Undelivered rows are never deleted: `purge_delivered` removes only rows delivered before
  the cutoff.
* A row holds what is read and nothing else (see `buffer_schema` and migration v2): the record
  the broker receives is `payload`, rendered once at insert by `contract.record_json` and sent
  verbatim ever after, including on replay.
* Hot paths (insert, pending read, delivery mark) are plain driver SQL: SQLAlchemy's per-row
  parameter processing costs more than SQLite itself at thousands of rows per commit. Their
  column names come from the `buffer_schema` handles all the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from punchgate.sync import buffer_schema
from punchgate.sync.contract import record_json
from punchgate.sync.records import Punch

# SQLite's bound-parameter limit is 32766 on current builds; stay well below it.
_IN_CHUNK = 900
_MARK_CHUNK = 30000

_T = buffer_schema.punches
P = _T.c

# The columns an insert writes (pk is SQLite's rowid, delivered_at starts NULL), in the order
# `punch_row` gives their values.
INSERT_COLUMNS = (P.id, P.device, P.user_id, P.utc_time, P.source, P.payload, P.raw, P.stored_at)
_INSERT_SQL = (
    f"INSERT INTO {_T.name} ({', '.join(c.name for c in INSERT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
)
_PENDING_BATCH_SQL = (
    f"SELECT {P.pk}, {P.device}, {P.source}, {P.payload} FROM {_T.name}"
    f" WHERE {P.delivered_at} IS NULL AND {P.pk} > ? ORDER BY {P.pk} LIMIT ?"
)
_MARK_SQL = f"UPDATE {_T.name} SET {P.delivered_at.name} = ? WHERE {P.delivered_at} IS NULL AND {P.pk} IN "
_REQUEUE_SQL = f"UPDATE {_T.name} SET {P.delivered_at.name} = NULL WHERE {P.delivered_at} >= ?"
_REQUEUE_DEVICE_SQL = f"{_REQUEUE_SQL} AND {P.device} = ?"


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One undelivered punch as the forwarder needs it: no ORM object, just the rendered JSON."""

    pk: int
    device: str
    source: str
    payload: str


def punch_row(punch: Punch, now: float) -> tuple[Any, ...]:
    """The values `insert_punches` writes for one punch, in `INSERT_COLUMNS` order."""
    return (
        punch.id,
        punch.device,
        punch.user_id,
        punch.utc_time.isoformat(),
        punch.source,
        record_json(punch),
        punch.raw,
        now,
    )


# --- punches in ---------------------------------------------------------------------------------
def known_ids(conn: Connection, ids: Iterable[str]) -> set[str]:
    """The subset of `ids` already in the buffer (pending or delivered)."""
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    query = select(P.id).where(P.id.in_(bindparam("ids", expanding=True)))
    for start in range(0, len(wanted), _IN_CHUNK):
        found.update(conn.execute(query, {"ids": wanted[start : start + _IN_CHUNK]}).scalars())
    return found


def insert_punches(conn: Connection, punches: Sequence[Punch], now: float) -> None:
    """Insert punches not yet in the file (the caller filtered known ids), stored at `now`."""
    insert_rows(conn, [punch_row(p, now) for p in punches])


def insert_rows(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows made by `punch_row` (the audit chain digests the same tuples)."""
    conn.exec_driver_sql(_INSERT_SQL, rows)


# --- pending ------------------------------------------------------------------------------------
def count_pending(conn: Connection, device: str | None = None) -> int:
    query = select(func.count()).select_from(_T).where(P.delivered_at.is_(None))
    if device is not None:
        query = query.where(P.device == device)
    return int(conn.execute(query).scalar_one())


def pending_devices(conn: Connection) -> dict[str, int]:
    """Undelivered punches per device."""
    query = select(P.device, func.count()).where(P.delivered_at.is_(None)).group_by(P.device)
    return {device: int(count) for device, count in conn.execute(query)}


def oldest_pending_stored_at(conn: Connection) -> float | None:
    """When the oldest undelivered punch was stored (unix time); None when nothing is pending."""
    query = select(P.stored_at).where(P.delivered_at.is_(None)).order_by(P.pk).limit(1)
    stored_at = conn.execute(query).scalar_one_or_none()
    return None if stored_at is None else float(stored_at)


def pending_batch(conn: Connection, limit: int, *, after: int = 0) -> list[PendingRow]:
    """Up to `limit` undelivered punches with pk > `after`, oldest first (all devices)."""
    # One fetchall: iterating the result costs a DB-API fetchone per row (py-spy).
    rows = conn.exec_driver_sql(_PENDING_BATCH_SQL, (after, limit)).fetchall()
    return [PendingRow(pk, device, source, payload) for pk, device, source, payload in rows]


# --- delivery state -----------------------------------------------------------------------------
def mark_delivered(conn: Connection, pks: Sequence[int], now: float) -> int:
    """Mark exactly these rows delivered at `now`; returns how many were pending and changed."""
    changed = 0
    # Hot path: plain SQL with one placeholder per row, no statement compilation.
    for start in range(0, len(pks), _MARK_CHUNK):
        part = list(pks[start : start + _MARK_CHUNK])
        sql = f"{_MARK_SQL}({','.join('?' * len(part))})"
        changed += int(conn.exec_driver_sql(sql, (now, *part)).rowcount)
    return changed


def requeue_delivered(conn: Connection, *, since: float, device: str | None = None) -> int:
    """Make rows delivered at or after `since` pending again; returns how many changed."""
    if device is None:
        return int(conn.exec_driver_sql(_REQUEUE_SQL, (since,)).rowcount)
    return int(conn.exec_driver_sql(_REQUEUE_DEVICE_SQL, (since, device)).rowcount)


def purge_ids(conn: Connection, *, before: float) -> list[str]:
    """The ids `purge_delivered(before=...)` deletes, oldest first (for the audit chain)."""
    query = select(P.id).where(P.delivered_at.is_not(None), P.delivered_at < before).order_by(P.pk)
    return [str(ident) for ident in conn.execute(query).scalars()]


def purge_delivered(conn: Connection, *, before: float) -> int:
    """Delete rows delivered before `before` (unix time); pending rows are never touched."""
    statement = _T.delete().where(P.delivered_at.is_not(None), P.delivered_at < before)
    return int(conn.execute(statement).rowcount)


# --- inventory ----------------------------------------------------------------------------------
def punch_count(conn: Connection) -> int:
    """All punches held, delivered or not."""
    return int(conn.execute(select(func.count()).select_from(_T)).scalar_one())


def delivered_ids(conn: Connection) -> set[str]:
    return set(conn.execute(select(P.id).where(P.delivered_at.is_not(None))).scalars())


def all_ids(conn: Connection) -> set[str]:
    return set(conn.execute(select(P.id)).scalars())
