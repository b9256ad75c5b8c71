"""Staged punches: committed before their dedupe, moved into `punches` later (migration v8).

Why: a push terminal uploading a backlog sends its next part only once the last one is
answered, and the answer waits for a durable commit. Into `punches` that commit is dear: the
record ids are hashes, so a part's 500 new ids land on as many scattered leaves of the unique
`id` index, and every commit rewrites (and fsyncs) each leaf it touched; at 100,000 stored
punches a part's commit appended about 2 MiB of WAL (bench/notes.md, issue 19). Staged, a part
is the same rows (`punch_row`) appended to a table with no index but its rowid: one cheap,
durable commit. The move then takes many parts in one transaction, where the index leaves
are rewritten once for all of them.

* `stage` commits rows, after the same refusals as an insert (below the disk minimum; no room
  under `max_pending`, where staged rows count as pending ones): all of a part or none.
* `move` takes the oldest staged rows (at most `limit`) and, in one transaction: inserts them
  into `punches` in staging order, `ON CONFLICT (id) DO NOTHING` (a punch the buffer holds,
  or staged twice, is a no-op as at any insert); writes the audit chain's entry for the rows
  that went in, read back in their `punches` order; deletes the staged rows. A crash before
  that commit leaves them all staged, after it none: a staged punch is never lost, never
  stored twice. No room check: the room was taken when they were staged.

Every caller holds the store's write lock. The staged counts (in total and per device) are
kept in memory, counted in the table once at open, like the pending counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from punchgate.sync import buffer_insert, buffer_outbox, buffer_schema

if TYPE_CHECKING:
    from punchgate.sync.store import Store

_S = buffer_schema.staged_punches
_P = buffer_schema.punches
_COLUMNS = ", ".join(c.name for c in buffer_outbox.INSERT_COLUMNS)
_STAGE_SQL = (
    f"INSERT INTO {_S.name} ({_COLUMNS}) VALUES ({', '.join('?' * len(buffer_outbox.INSERT_COLUMNS))})"
)
_COUNTS_SQL = f"SELECT device, count(*) FROM {_S.name} GROUP BY device"
_LAST_TAKEN_SQL = f"SELECT max(pk) FROM (SELECT pk FROM {_S.name} ORDER BY pk LIMIT ?)"
_TAKEN_COUNTS_SQL = f"SELECT device, count(*) FROM {_S.name} WHERE pk <= ? GROUP BY device"
_NEWEST_PK_SQL = f"SELECT coalesce(max(pk), 0) FROM {_P.name}"
# The WHERE clause also keeps SQLite from reading ON CONFLICT as a join's ON (its upsert docs).
_MOVE_SQL = (
    f"INSERT INTO {_P.name} ({_COLUMNS}) SELECT {_COLUMNS} FROM {_S.name}"
    f" WHERE pk <= ? ORDER BY pk ON CONFLICT (id) DO NOTHING"
)
_MOVED_ROWS_SQL = f"SELECT {_COLUMNS} FROM {_P.name} WHERE pk > ? ORDER BY pk"
_DELETE_SQL = f"DELETE FROM {_S.name} WHERE pk <= ?"


@dataclass(frozen=True, slots=True)
class Moved:
    """What one move did: rows taken from staging (per device), and the ids that were new."""

    taken: Counter[str]
    inserted: dict[str, list[str]]  # device -> ids inserted into `punches`, in order

    @property
    def total_taken(self) -> int:
        return sum(self.taken.values())


def count_staged(conn: Connection) -> Counter[str]:
    """Staged rows per device, counted in the table (once, at open)."""
    return Counter({str(device): int(n) for device, n in conn.exec_driver_sql(_COUNTS_SQL).fetchall()})


def stage(store: Store, rows: Sequence[tuple[Any, ...]]) -> None:
    """Commit `punch_row` rows to staging (all or none): `DiskLowError` below the disk
    minimum, `BufferFullError` when `max_pending` has no room for all of them."""
    limits = store._limits
    limits.check_disk(store.path.parent)
    if limits.room_for(len(rows)) < len(rows):
        limits.refuse(len(rows), stored=[])
    with store._writer.begin() as conn:
        conn.exec_driver_sql(_STAGE_SQL, list(rows))
    by_device = Counter(row[1] for row in rows)
    with store._counts_lock:
        store._staged_by_device.update(by_device)
        limits.staged += len(rows)


def move(store: Store, limit: int) -> Moved:
    """Move the oldest `limit` staged rows (at most) into `punches`, in one transaction."""
    with store._writer.begin() as conn:
        last = conn.exec_driver_sql(_LAST_TAKEN_SQL, (limit,)).scalar()
        if last is None:
            return Moved(Counter(), {})
        taken = Counter(
            {str(device): int(n) for device, n in conn.exec_driver_sql(_TAKEN_COUNTS_SQL, (last,)).fetchall()}
        )
        newest = int(conn.exec_driver_sql(_NEWEST_PK_SQL).scalar_one())
        conn.exec_driver_sql(_MOVE_SQL, (last,))
        rows = [tuple(row) for row in conn.exec_driver_sql(_MOVED_ROWS_SQL, (newest,)).fetchall()]
        conn.exec_driver_sql(_DELETE_SQL, (last,))
        if rows:
            buffer_insert.committing(store, conn, rows)
    with store._counts_lock:
        store._staged_by_device.subtract(taken)
        store._staged_by_device = +store._staged_by_device  # drop devices with none left
        store._limits.staged -= sum(taken.values())
    if rows:
        buffer_insert.committed(store, rows)
    inserted: dict[str, list[str]] = {}
    for row in rows:
        inserted.setdefault(str(row[1]), []).append(str(row[0]))
    return Moved(taken, inserted)
