"""Reading one table of a damaged buffer file in rowid order, stepping over what cannot be read.

Each table is read with `WHERE rowid > ? ORDER BY rowid` and `NOT INDEXED` (the table's own
b-tree, never a possibly damaged index). When a read fails, the rows before the failure are
kept, and the next rowid a seek can reach is searched for (doubling steps, then bisection);
the rowids in between are an unreadable range, recorded in the table's `TableSalvage`. When
ranges were skipped, the table's full index (a separate b-tree) may still count its rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from punchgate.sync.buffer_recover_report import TableSalvage

_MIN_ROWID = -(2**63)
_MAX_ROWID = 2**63 - 1
BATCH = 1000  # rows handed on (and inserted) at a time
# Reads that fail past this many skipped ranges of one table stop the table (a file this
# broken is better read by the sqlite3 shell's .recover, which also scans free pages).
_MAX_GAPS = 10_000


def quoted(name: str) -> str:
    """`name` as an SQL identifier (a table or column of the damaged file may be named anything)."""
    return '"' + name.replace('"', '""') + '"'


def _seek(conn: sqlite3.Connection, table: str, after: int) -> tuple[bool, int | None]:
    """(readable, first rowid > after): whether a seek past `after` works, and where it lands
    (None: nothing after it)."""
    try:
        row = conn.execute(
            f'SELECT rowid FROM "{table}" NOT INDEXED WHERE rowid > ? ORDER BY rowid LIMIT 1', (after,)
        ).fetchone()
    except sqlite3.DatabaseError:
        return False, None
    return True, None if row is None else int(row[0])


def _next_readable(conn: sqlite3.Connection, table: str, after: int) -> tuple[bool, int | None]:
    """From a rowid `after` past which reading fails: (found, the first rowid a read can start
    at). Doubles the step until a seek works, then bisects back to the first start that does."""
    bad, step = after, 1
    good: int | None = None
    landed: int | None = None
    while bad < _MAX_ROWID:
        probe = min(_MAX_ROWID, after + step)
        ok, where = _seek(conn, table, probe)
        if ok:
            good, landed = probe, where
            break
        bad, step = probe, step * 2
    if good is None:
        return False, None
    while good - bad > 1:
        mid = (bad + good) // 2
        ok, where = _seek(conn, table, mid)
        if ok:
            good, landed = mid, where
        else:
            bad = mid
    return True, landed


def read_table(
    conn: sqlite3.Connection, table: str, columns: Sequence[str], salvage: TableSalvage
) -> Iterator[list[tuple[Any, ...]]]:
    """The table's readable rows (rowid first), in batches, stepping over unreadable ranges."""
    select = (
        f"SELECT rowid, {', '.join(map(quoted, columns))} FROM {quoted(table)} NOT INDEXED"
        " WHERE rowid > ? ORDER BY rowid"
    )
    after, floor = _MIN_ROWID, _MIN_ROWID
    while len(salvage.gaps) <= _MAX_GAPS:
        batch: list[tuple[Any, ...]] = []
        try:
            # Row by row (not fetchmany): when a step fails, every row before it is kept.
            for row in conn.execute(select, (after,)):
                batch.append(row)
                after = int(row[0])
                if len(batch) == BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch
            return
        except sqlite3.DatabaseError:
            if batch:
                yield batch
        # No progress since the last failure: look past the start that failed, not at it again.
        floor = after if after > floor else floor + 1
        found, resume = _next_readable(conn, table, floor)
        if not found or resume is None:
            salvage.gaps.append((after, None))
            tail = _tail_estimate(conn, table, after)
            if salvage.gap_rowids is not None:
                salvage.gap_rowids = None if tail is None else salvage.gap_rowids + tail
            return
        salvage.gaps.append((after, resume))
        if salvage.gap_rowids is not None:
            salvage.gap_rowids += max(0, resume - max(after, 0) - 1)
        after = resume - 1


def _tail_estimate(conn: sqlite3.Connection, table: str, after: int) -> int | None:
    """Rowids past `after` up to the largest one SQLite can still find (None if it cannot)."""
    try:
        row = conn.execute(f"SELECT max(rowid) FROM {quoted(table)}").fetchone()
    except sqlite3.DatabaseError:
        return None
    return max(0, int(row[0]) - max(after, 0)) if row and row[0] is not None else None


def indexed_count(conn: sqlite3.Connection, table: str) -> int | None:
    """How many rows the table's full (not partial) indexes list, if one of them can be read:
    an index is a second, separate b-tree, often intact when the table's is not."""
    try:
        indexes = [
            str(name)
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)
            )
            if sql is None or " WHERE " not in str(sql).upper()
        ]
    except sqlite3.DatabaseError:
        return None
    for index in indexes:
        try:
            return int(
                conn.execute(f"SELECT count(*) FROM {quoted(table)} INDEXED BY {quoted(index)}").fetchone()[0]
            )
        except sqlite3.DatabaseError:
            continue
    return None
