"""Punches in: `Store.add_punches`' transaction (dedupe, limits, insert, audit, counts).

One commit per call, under the store's write lock. A punch whose id the file holds already is
a no-op, and the ids returned are exactly the rows inserted: the audit chain covers those rows
and the pending counts grow by them, per device.

Two ways to find the known ids, with the same outcome:

* the usual call (room for every punch given, disk not low): one `INSERT ... ON CONFLICT (id)
  DO NOTHING` of every row, then, only if fewer rows went in than were given, the ids of the
  rows it did insert (the newest pks: the write lock and the transaction keep anyone else's
  rows out). A backlog post is 500 new punches; asking the unique index first which of them it
  holds cost about 2.4 µs a punch (py-spy of a push upload), and the insert asks it anyway;
* near `max_pending` or below the disk minimum: the known ids are looked up first, so only
  new punches count against the room left, and punches all known need no disk space.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from punchgate.sync import audit, buffer_counts, buffer_identity, buffer_outbox, buffer_schema
from punchgate.sync.buffer_errors import DiskLowError
from punchgate.sync.records import Punch

if TYPE_CHECKING:
    from punchgate.sync.store import Store

_T = buffer_schema.punches
_P = _T.c
_INSERT_NEW_SQL = f"{buffer_outbox.INSERT_SQL} ON CONFLICT ({_P.id.name}) DO NOTHING"
_NEWEST_IDS_SQL = f"SELECT {_P.id} FROM {_T.name} ORDER BY {_P.pk} DESC LIMIT ?"


def add_new(store: Store, punches: Sequence[Punch]) -> list[str]:
    """`Store.add_punches` without the companion update: insert what is new and fits."""
    with store._write_lock:
        unique = list({p.id: p for p in punches}.values())
        if store._limits.room_for(len(unique)) == len(unique):
            try:
                store._limits.check_disk(store.path.parent)
            except DiskLowError:
                pass  # refused below only if some punch is new
            else:
                return _insert_all_new(store, unique)
        return _insert_checked(store, unique)


def _insert_all_new(store: Store, unique: list[Punch]) -> list[str]:
    """Every punch offered to the insert; the file's unique index skips the known ones."""
    now = time.time()
    punch_row = buffer_outbox.punch_row
    rows = [punch_row(p, now) for p in unique]
    with store._writer.begin() as conn:
        inserted = int(conn.exec_driver_sql(_INSERT_NEW_SQL, rows).rowcount)
        if inserted < len(rows):
            rows = _inserted_rows(conn, rows, inserted)
        if rows:
            committing(store, conn, rows)
    if rows:
        committed(store, rows)
    return [row[0] for row in rows]


def _inserted_rows(conn: Any, rows: list[tuple[Any, ...]], inserted: int) -> list[tuple[Any, ...]]:
    """The rows (in the order given) of the `inserted` ones the insert just added: the newest
    pks of the file (a new row's pk is the largest yet plus one, and nobody else inserts
    under the write lock)."""
    if not inserted:
        return []
    new_ids = {str(ident) for (ident,) in conn.exec_driver_sql(_NEWEST_IDS_SQL, (inserted,)).fetchall()}
    return [row for row in rows if row[0] in new_ids]


def _insert_checked(store: Store, unique: list[Punch]) -> list[str]:
    """Known ids looked up first: near the limit only new punches count against the room left."""
    known = store.known_ids(p.id for p in unique)
    new = [p for p in unique if p.id not in known]
    if not new:
        return []
    store._limits.check_disk(store.path.parent)
    room = store._limits.room_for(len(new))
    fits, refused = new[:room], new[room:]
    if fits:
        now = time.time()
        rows = [buffer_outbox.punch_row(p, now) for p in fits]
        with store._writer.begin() as conn:
            buffer_outbox.insert_rows(conn, rows)
            committing(store, conn, rows)
        committed(store, rows)
    if refused:
        store._limits.refuse(len(refused), stored=[p.id for p in fits])
    return [p.id for p in fits]


def committing(store: Store, conn: Any, rows: list[tuple[Any, ...]]) -> None:
    """In the insert's transaction: the count of punches ever stored, and the audit chain."""
    buffer_identity.count_stored(conn, len(rows))
    if store.audit_enabled:
        audit.append_punches(conn, rows)


def committed(store: Store, rows: list[tuple[Any, ...]]) -> None:
    """After the commit, still under the write lock: the counts kept in memory."""
    buffer_counts.pending_changed(store, Counter(row[1] for row in rows), 1)
    store._stored += len(rows)
