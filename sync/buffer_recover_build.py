"""Building the new buffer file from what a damaged one still holds.

The new file is made by the migrations up to the damaged file's schema version, filled table
by table with the rows SQLite can read (`buffer_recover_read`), then with the punches only the
page scan finds (`buffer_pagescan`), migrated to the latest version, and given a new identity
(this gateway's id, created now, `stored` never below what the old identity said). A punch
whose payload is no longer a JSON record of its own id is dropped and counted (the forwarder
would send it verbatim); rows violating the schema's constraints likewise.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from punchgate.sync import buffer_identity, buffer_outbox, buffer_pagescan, buffer_schema, migrations
from punchgate.sync.buffer_file import make_engine, migrate_checked
from punchgate.sync.buffer_identity import Identity
from punchgate.sync.buffer_paths import BufferPaths, create_private_file
from punchgate.sync.buffer_recover_read import BATCH, indexed_count, quoted, read_table
from punchgate.sync.buffer_recover_report import RecoverReport, TableSalvage
from punchgate.sync.buffer_recover_source import Source, open_source, read_identity, source_version

# Tables copied row by row; `identity` is not copied: the new file gets a new identity.
SALVAGED = ("punches", "batch_seq", "device_meta")
# Push backlog punches answered and not moved into `punches` yet: copied as they are from a
# file of schema version STAGED_SINCE or later, which has the table (the page scan takes only
# `punches` rows); the daemon moves them at its next start.
STAGED = buffer_schema.staged_punches.name
STAGED_SINCE = 8  # migrations._v8_staged_punches


def _valid_punch(id_index: int, payload_index: int) -> Callable[[Sequence[Any]], bool]:
    """A punch row is usable when its payload is a JSON object naming the row's own id (the
    forwarder sends the payload verbatim; a damaged one would reach central as it is)."""

    def valid(row: Sequence[Any]) -> bool:
        payload = row[payload_index]
        if not isinstance(payload, str):
            return False
        try:
            record = json.loads(payload)
        except ValueError:
            return False
        return (
            isinstance(record, dict) and record.get("id") == row[id_index] and isinstance(row[id_index], str)
        )

    return valid


class _Writer:
    """Inserts salvaged rows of one table into the new file (rowid first, then `columns`)."""

    def __init__(self, dst: Connection, table: str, columns: list[str]) -> None:
        self.dst = dst
        self.columns = columns
        # OR IGNORE: a row breaking a constraint (NOT NULL, a repeated id or rowid) is skipped.
        self.sql = (
            f"INSERT OR IGNORE INTO {quoted(table)} (rowid, {', '.join(map(quoted, columns))})"
            f" VALUES (?{', ?' * len(columns)})"
        )
        self.valid = (
            _valid_punch(1 + columns.index("id"), 1 + columns.index("payload"))
            if table == "punches" and {"id", "payload"} <= set(columns)
            else None
        )

    def write(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert the valid ones; how many went in."""
        rows = rows if self.valid is None else [row for row in rows if self.valid(row)]
        if not rows:
            return 0
        before = int(self.dst.exec_driver_sql("SELECT total_changes()").scalar_one())
        self.dst.exec_driver_sql(self.sql, list(rows))
        return int(self.dst.exec_driver_sql("SELECT total_changes()").scalar_one()) - before


def _columns(conn: sqlite3.Connection | Connection, table: str) -> list[tuple[str, bool]]:
    """(name, is the rowid alias) for each column of `table`."""
    sql = f'PRAGMA table_info("{table}")'
    rows = (
        conn.execute(sql).fetchall()
        if isinstance(conn, sqlite3.Connection)
        else conn.exec_driver_sql(sql).fetchall()
    )
    keys = [r for r in rows if int(r[5]) > 0]
    alias = str(keys[0][1]) if len(keys) == 1 and str(keys[0][2]).upper() == "INTEGER" else None
    return [(str(r[1]), str(r[1]) == alias) for r in rows]


def _copy_table(src: sqlite3.Connection, dst: Connection, table: str, report: RecoverReport) -> None:
    salvage = TableSalvage(table)
    report.tables.append(salvage)
    try:
        source_columns = {name for name, _alias in _columns(src, table)}
        src.execute(f"SELECT rowid FROM {quoted(table)} NOT INDEXED LIMIT 0").fetchall()
    except sqlite3.DatabaseError as exc:
        salvage.error = str(exc)
        return
    if not source_columns:
        salvage.error = "the table is missing"
        return
    writer = _Writer(
        dst, table, [name for name, alias in _columns(dst, table) if not alias and name in source_columns]
    )
    for batch in read_table(src, table, writer.columns, salvage):
        salvage.read += len(batch)
        salvage.written += writer.write(batch)
    salvage.dropped = salvage.read - salvage.written
    if salvage.gaps:
        salvage.indexed = indexed_count(src, table)


def _scan_punches(source: BufferPaths, page_size: int | None, dst: Connection, report: RecoverReport) -> None:
    """Punches the tree walk could not reach, from the file's leaf pages (`buffer_pagescan`)."""
    salvage = report.table("punches")
    if salvage is None:
        salvage = TableSalvage("punches", gap_rowids=None)
        report.tables.insert(0, salvage)
    layout = _columns(dst, "punches")
    alias = next((i for i, (_name, is_alias) in enumerate(layout) if is_alias), None)
    writer = _Writer(dst, "punches", [name for name, is_alias in layout if not is_alias])
    batch: list[tuple[Any, ...]] = []
    for rowid, values in buffer_pagescan.leaf_rows(source.db, source.wal, page_size=page_size):
        if len(values) != len(layout) or (alias is not None and values[alias] is not None):
            continue  # another table's row, or not a row at all
        batch.append((rowid, *(v for i, v in enumerate(values) if i != alias)))
        if len(batch) >= BATCH:
            salvage.scanned += writer.write(batch)
            batch = []
    salvage.scanned += writer.write(batch)
    salvage.written += salvage.scanned


def _scan_wanted(source: Source, report: RecoverReport) -> bool:
    """Whether the page scan may find punches the tree walk did not."""
    punches = report.table("punches")
    walked_all = punches is not None and not punches.gaps and not punches.error
    return source.files is not None and not walked_all


def build(paths: BufferPaths, new: BufferPaths, work: Path, report: RecoverReport, gateway_id: str) -> None:
    """The new buffer file in `new`, with everything readable from the damaged one."""
    source = open_source(paths, work, report)
    src = source.conn
    try:
        version = migrations.LATEST_VERSION
        if src is not None:
            version = min(source_version(src, report.header_rebuilt is not None), migrations.LATEST_VERSION)
            report.source_version = version
            report.old_identity = read_identity(src)
        create_private_file(new.db)
        engine = make_engine(new.db)
        try:
            with engine.execution_options(write=True).begin() as conn:
                migrations.migrate(conn, migrations.STEPS[:version])
                if src is not None:
                    for table in SALVAGED + ((STAGED,) if version >= STAGED_SINCE else ()):
                        _copy_table(src, conn, table, report)
                if source.files is not None and _scan_wanted(source, report):
                    _scan_punches(source.files, source.page_size, conn, report)
                migrate_checked(conn, paths.db)
                _new_identity(conn, report, gateway_id)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
    finally:
        if src is not None:
            src.close()
    _notes(report)


def _new_identity(conn: Connection, report: RecoverReport, gateway_id: str) -> None:
    punches = buffer_outbox.punch_count(conn)
    pending = buffer_outbox.count_pending(conn)
    old = report.old_identity.stored if report.old_identity is not None else 0
    identity = Identity(gateway_id, buffer_identity.now_text(), max(old, punches))
    buffer_identity.set_identity(conn, identity)
    report.new_identity = identity
    report.pending, report.delivered = pending, punches - pending


def _notes(report: RecoverReport) -> None:
    seq = report.table("batch_seq")
    if seq is not None and (seq.gaps or seq.error):
        report.notes.append(
            "batch sequence numbers were partly unreadable: a terminal whose row was lost numbers "
            "its batches from 1 again (central should not treat that as a restart of the count)"
        )
    punches = report.table("punches")
    if punches is not None and punches.dropped:
        report.notes.append(f"{punches.dropped} punches were dropped: their stored record is damaged")
