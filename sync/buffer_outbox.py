"""The punches table as an outbox: punches in (dedupe, insert), and out (pending reads,
delivery marks, replay, purge). Functions take the caller's connection; the store owns the
transactions, the write lock and the pending count.

Design and invariants:

* A punch is stored once: `id` is unique in the file (unique index). `known_ids` lets the
  store skip known punches before inserting, so a re-read terminal log is a no-op.
* `pk` is insertion order and "oldest first" means lowest pk. The forwarder drains with pk
  cursors (a common one and one per terminal: `buffer_delivery.pending_per_device`), so a row
  must never change its pk.
* `delivered_at IS NULL` is what "pending" means. `mark_delivered` changes only rows still
  pending and says exactly which devices' rows it changed (the caller's per-device counts,
  checked against the rows changed, or `RETURNING device`);
  `requeue_delivered` is its inverse for replay. The store adjusts its pending counts (in
  total and per device) by those returned rows, so nobody has to count the table again.
* Central delivery (migration v5): a pending row with `sent_at` set is "sent, unconfirmed";
  `mark_sent` sets it at the PUBACK, `confirm_*` deliver rows a consumer confirmed (by id, or
  by pk for a batch the forwarder remembers), `claim_resends` hands out rows whose last send
  is older than the re-send timeout. They return exactly how many rows changed state, so the
  store can keep its unconfirmed count as it keeps the pending count. A requeue clears
  `sent_at` with `delivered_at`.
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

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

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
INSERT_SQL = (
    f"INSERT INTO {_T.name} ({', '.join(c.name for c in INSERT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
)
_PENDING_BATCH_SQL = (
    f"SELECT {P.pk}, {P.device}, {P.source}, {P.payload} FROM {_T.name}"
    f" WHERE {P.delivered_at} IS NULL AND {P.pk} > ? ORDER BY {P.pk} LIMIT ?"
)
_MARK_SQL = f"UPDATE {_T.name} SET {P.delivered_at.name} = ? WHERE {P.delivered_at} IS NULL AND {P.pk} IN "
_REQUEUE_SQL = (
    f"UPDATE {_T.name} SET {P.delivered_at.name} = NULL, {P.sent_at.name} = NULL WHERE {P.delivered_at} >= ?"
)
# The statements that change what is pending say whose rows they changed (SQLite >= 3.35).
_RETURNING_DEVICE = f" RETURNING {P.device.name}"
# The known-id check: one probe of the unique index per id, plain SQL (no statement compilation).
_KNOWN_SQL = f"SELECT {P.id} FROM {_T.name} WHERE {P.id} IN "
_PENDING_DEVICES_SQL = (
    f"SELECT {P.device}, count(*) FROM {_T.name} WHERE {P.delivered_at} IS NULL GROUP BY {P.device}"
)
# Central delivery (migration v5). The WHERE clauses repeat the partial indexes' conditions
# word for word, so SQLite uses them.
_UNSENT = f"{P.delivered_at} IS NULL AND {P.sent_at} IS NULL"
_UNCONFIRMED = f"{P.delivered_at} IS NULL AND {P.sent_at} IS NOT NULL"
_UNSENT_BATCH_SQL = (
    f"SELECT {P.pk}, {P.device}, {P.source}, {P.payload} FROM {_T.name}"
    f" WHERE {_UNSENT} AND {P.pk} > ? ORDER BY {P.pk} LIMIT ?"
)
_DUE_SQL = (
    f"SELECT {P.pk}, {P.device}, {P.source}, {P.payload} FROM {_T.name}"
    f" WHERE {_UNCONFIRMED} AND {P.sent_at} <= ? ORDER BY {P.pk} LIMIT ?"
)
_SENT_NEW_SQL = f"UPDATE {_T.name} SET {P.sent_at.name} = ? WHERE {_UNSENT} AND {P.pk} IN "
_SENT_AGAIN_SQL = f"UPDATE {_T.name} SET {P.sent_at.name} = ? WHERE {_UNCONFIRMED} AND {P.pk} IN "
_CONFIRM_SQL = f"UPDATE {_T.name} SET {P.delivered_at.name} = ? WHERE {P.delivered_at} IS NULL AND "
_REQUEUE_DEVICE_SQL = f"{_REQUEUE_SQL} AND {P.device} = ?"


def _devices(rows: Iterable[Any]) -> Counter[str]:
    """Rows returned by `RETURNING device`, counted per device."""
    return Counter(str(device) for (device,) in rows)


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One undelivered punch as the forwarder needs it: no ORM object, just the rendered JSON."""

    pk: int
    device: str
    source: str
    payload: str


def punch_row(punch: Punch, now: float) -> tuple[Any, ...]:
    """The values `insert_punches` writes for one punch, in `INSERT_COLUMNS` order."""
    utc = punch.utc_time.isoformat()
    return (
        punch.id,
        punch.device,
        punch.user_id,
        utc,
        punch.source,
        record_json(punch, utc_isoformat=utc),
        punch.raw,
        now,
    )


# --- punches in ---------------------------------------------------------------------------------
def known_ids(conn: Connection, ids: Iterable[str]) -> set[str]:
    """The subset of `ids` already in the buffer (pending or delivered).

    Plain SQL, one `IN (...)` per chunk answered from the unique index on `id`: SQLAlchemy's
    expanding parameters and per-row fetch cost more than SQLite itself here (py-spy)."""
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _IN_CHUNK):
        part = wanted[start : start + _IN_CHUNK]
        rows = conn.exec_driver_sql(f"{_KNOWN_SQL}({','.join('?' * len(part))})", tuple(part)).fetchall()
        found.update(str(ident) for (ident,) in rows)
    return found


def insert_punches(conn: Connection, punches: Sequence[Punch], now: float) -> None:
    """Insert punches not yet in the file (the caller filtered known ids), stored at `now`."""
    insert_rows(conn, [punch_row(p, now) for p in punches])


def insert_rows(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows made by `punch_row` (the audit chain digests the same tuples)."""
    conn.exec_driver_sql(INSERT_SQL, rows)


# --- pending ------------------------------------------------------------------------------------
def count_pending(conn: Connection, device: str | None = None) -> int:
    query = select(func.count()).select_from(_T).where(P.delivered_at.is_(None))
    if device is not None:
        query = query.where(P.device == device)
    return int(conn.execute(query).scalar_one())


def pending_devices(conn: Connection) -> dict[str, int]:
    """Undelivered punches per device, counted in the table (the store does this once, at open,
    and keeps the counts itself from then on)."""
    rows = conn.exec_driver_sql(_PENDING_DEVICES_SQL).fetchall()
    return {str(device): int(count) for device, count in rows}


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
def mark_delivered(conn: Connection, pks: Sequence[int], now: float) -> Counter[str]:
    """Mark exactly these rows delivered at `now`; returns the rows that were pending and
    changed, counted per device."""
    changed: Counter[str] = Counter()
    # Hot path: plain SQL with one placeholder per row, no statement compilation.
    for start in range(0, len(pks), _MARK_CHUNK):
        part = list(pks[start : start + _MARK_CHUNK])
        sql = f"{_MARK_SQL}({','.join('?' * len(part))}){_RETURNING_DEVICE}"
        changed.update(_devices(conn.exec_driver_sql(sql, (now, *part)).fetchall()))
    return changed


# --- central delivery: sent, unconfirmed, confirmed -----------------------------------------------
def unsent_batch(conn: Connection, limit: int, *, after: int = 0) -> list[PendingRow]:
    """Up to `limit` pending rows not sent yet with pk > `after`, oldest first (central mode)."""
    rows = conn.exec_driver_sql(_UNSENT_BATCH_SQL, (after, limit)).fetchall()
    return [PendingRow(pk, device, source, payload) for pk, device, source, payload in rows]


def _update_in(conn: Connection, sql: str, head: tuple[Any, ...], keys: Sequence[Any]) -> int:
    """Run `sql` + `(?, ?, ...)` over `keys` in chunks; the rows changed."""
    changed = 0
    for start in range(0, len(keys), _IN_CHUNK):
        part = list(keys[start : start + _IN_CHUNK])
        changed += int(conn.exec_driver_sql(f"{sql}({','.join('?' * len(part))})", (*head, *part)).rowcount)
    return changed


def _update_in_devices(
    conn: Connection, sql: str, head: tuple[Any, ...], keys: Sequence[Any]
) -> Counter[str]:
    """`_update_in`, returning the rows changed counted per device."""
    changed: Counter[str] = Counter()
    for start in range(0, len(keys), _IN_CHUNK):
        part = list(keys[start : start + _IN_CHUNK])
        statement = f"{sql}({','.join('?' * len(part))}){_RETURNING_DEVICE}"
        changed.update(_devices(conn.exec_driver_sql(statement, (*head, *part)).fetchall()))
    return changed


def mark_sent(conn: Connection, pks: Sequence[int], now: float) -> int:
    """Note the PUBACK of these pending rows at `now`; returns how many became unconfirmed
    (rows sent again only get the new time; delivered rows are left alone)."""
    fresh = _update_in(conn, _SENT_NEW_SQL, (now,), pks)
    if fresh < len(pks):  # some were sent before (a re-send), or confirmed already
        _update_in(conn, _SENT_AGAIN_SQL, (now,), pks)
    return fresh


def claim_resends(conn: Connection, *, sent_before: float, now: float, limit: int) -> list[PendingRow]:
    """Up to `limit` unconfirmed rows last sent at or before `sent_before`, oldest first, each
    claimed (its `sent_at` set to `now`) so that the next scan does not hand it out again while it
    is in flight. If that send fails it is simply due again one timeout later."""
    rows = conn.exec_driver_sql(_DUE_SQL, (sent_before, limit)).fetchall()
    _update_in(conn, _SENT_AGAIN_SQL, (now,), [row[0] for row in rows])
    return [PendingRow(pk, device, source, payload) for pk, device, source, payload in rows]


@dataclass(frozen=True, slots=True)
class Confirmed:
    """What one confirmation changed: rows that were sent and unconfirmed, and rows confirmed
    before the PUBACK of their send was noted (or never sent by this file: after a replay)."""

    unconfirmed: int
    unsent: int
    devices: Counter[str] = field(default_factory=Counter)  # both, per device

    @property
    def total(self) -> int:
        return self.unconfirmed + self.unsent


def _confirm(conn: Connection, column: str, keys: Sequence[Any], now: float) -> Confirmed:
    sql = f"{_CONFIRM_SQL}{P.sent_at} IS NOT NULL AND {column} IN "
    unconfirmed = _update_in_devices(conn, sql, (now,), keys)
    unsent = _update_in_devices(conn, f"{_CONFIRM_SQL}{P.sent_at} IS NULL AND {column} IN ", (now,), keys)
    return Confirmed(unconfirmed.total(), unsent.total(), unconfirmed + unsent)


def confirm_ids(conn: Connection, ids: Sequence[str], now: float) -> Confirmed:
    """Deliver the pending rows with these record ids (a consumer stored them)."""
    return _confirm(conn, str(P.id), ids, now)


def confirm_pks(conn: Connection, pks: Sequence[int], now: float) -> Confirmed:
    """Deliver the pending rows with these pks (a batch the forwarder remembers was confirmed)."""
    return _confirm(conn, str(P.pk), pks, now)


def count_unconfirmed(conn: Connection) -> int:
    return int(conn.exec_driver_sql(f"SELECT count(*) FROM {_T.name} WHERE {_UNCONFIRMED}").scalar_one())


def oldest_unconfirmed_stored_at(conn: Connection) -> float | None:
    """When the oldest sent, unconfirmed row was stored (unix time); None when there is none."""
    sql = f"SELECT {P.stored_at} FROM {_T.name} WHERE {_UNCONFIRMED} ORDER BY {P.pk} LIMIT 1"
    value = conn.exec_driver_sql(sql).scalar_one_or_none()
    return None if value is None else float(value)


def oldest_unsent_stored_at(conn: Connection) -> float | None:
    """When the oldest pending row not sent yet was stored (unix time); None when there is none."""
    sql = f"SELECT {P.stored_at} FROM {_T.name} WHERE {_UNSENT} ORDER BY {P.pk} LIMIT 1"
    value = conn.exec_driver_sql(sql).scalar_one_or_none()
    return None if value is None else float(value)


def requeue_delivered(conn: Connection, *, since: float, device: str | None = None) -> Counter[str]:
    """Make rows delivered at or after `since` pending again; returns the rows that changed,
    counted per device."""
    if device is None:
        return _devices(conn.exec_driver_sql(_REQUEUE_SQL + _RETURNING_DEVICE, (since,)).fetchall())
    return _devices(conn.exec_driver_sql(_REQUEUE_DEVICE_SQL + _RETURNING_DEVICE, (since, device)).fetchall())


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


# The terminal-local day of a punch, from the record it carries (the table keeps no local time).
_LOCAL_DAY = f"substr(json_extract({P.payload}, '$.local_time'), 1, 10)"
# NOT INDEXED: the new rows are a range of the rowid. Left to itself, SQLite read the whole
# table through the (device, utc_time) index for its GROUP BY order: 120-170 ms a tick at 1.5M
# punches, every 5 s, growing with the buffer; the rowid range takes 3-6 ms.
_DAYS_SINCE_SQL = (
    f"SELECT {P.device}, {_LOCAL_DAY} AS day, max({P.pk}) FROM {_T.name} NOT INDEXED "
    f"WHERE {P.pk} > ? GROUP BY {P.device}, day"
)


_DAY_IDS_SQL = f"SELECT {_LOCAL_DAY}, {P.id} FROM {_T.name} WHERE {P.device} = ? AND {P.utc_time} >= ? AND {P.utc_time} < ?"


def days_ids(
    conn: Connection, device: str, days: set[str], *, utc_from: str, utc_to: str
) -> dict[str, list[str]]:
    """Ids of one terminal's punches per terminal-local day (`YYYY-MM-DD`) of `days`, delivered
    or not; a day without punches is absent.

    `utc_from` <= utc_time < `utc_to` (ISO 8601 prefixes) bounds the index range to read; the
    caller makes it wide enough for any UTC offset. One query for all the days: a gateway's
    first digests cover every day of the window for every terminal (500 terminals x 29 days
    were 14,500 queries, each formatting its SQL anew, at every start)."""
    found: dict[str, list[str]] = {}
    for day, ident in conn.exec_driver_sql(_DAY_IDS_SQL, (device, utc_from, utc_to)).fetchall():
        if day in days:
            found.setdefault(str(day), []).append(str(ident))
    return found


def days_stored_since(conn: Connection, after_pk: int) -> tuple[dict[str, set[str]], int]:
    """The terminals and terminal-local days of punches with pk > `after_pk`, and the highest pk
    seen (`after_pk` when none): which digests new punches changed."""
    # Grouped in SQLite: this runs every few seconds while a backlog streams in, and a Python
    # step per new row was about 7 % of the gateway's busy samples during a push upload (py-spy).
    changed: dict[str, set[str]] = {}
    top = after_pk
    for device, day, pk in conn.exec_driver_sql(_DAYS_SINCE_SQL, (after_pk,)).fetchall():
        changed.setdefault(str(device), set()).add(str(day))
        top = max(top, int(pk))
    return changed, top


def max_pk(conn: Connection) -> int:
    return int(conn.exec_driver_sql(f"SELECT coalesce(max({P.pk}), 0) FROM {_T.name}").scalar_one())
