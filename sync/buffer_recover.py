"""`punchgate buffer recover`: salvage what SQLite can still read into a new buffer file.

SQLite's own `.recover` lives in the `sqlite3` shell only (and that shell may not be
installed), so this reads the damaged file through Python's sqlite3, table by table, in
rowid order, and steps over what it cannot read:

* Each table is read with `WHERE rowid > ? ORDER BY rowid` and `NOT INDEXED` (the table's
  own b-tree, never a possibly damaged index), with `writable_schema` on so that a file
  shorter than its header says can be read at all. When a read fails, the rows before the
  failure are kept, and the next rowid a seek can reach is searched for (doubling steps,
  then bisection); the rowids in between are the unreadable range.
* When a table's tree could not be walked whole, every leaf page of the file is read
  directly (`buffer_pagescan`): a damaged inner page hides all the rows below it from SQLite,
  not from the pages themselves. Only punches are taken from there (rows that fit the
  punches table and whose payload names their own id); a rowid the walk found wins.
* A file whose 100-byte header is damaged (SQLite: "file is not a database") is read from a
  copy whose header is rebuilt from a fresh database's, for each possible page size, until
  SQLite can read its schema: the data pages are usually intact. A file that is empty or gone
  while its `-wal` is not is read from the database the WAL alone describes (its most
  recently written pages: the newest punches).
* Rows go into a new file built by the migrations up to the damaged file's schema version,
  then migrated to the latest, so an old file takes the same upgrade path as at any start.
  A punch whose payload is no longer a JSON record of its own id is dropped and counted (the
  forwarder would send it verbatim); rows violating the schema's constraints likewise.
* How many rows were lost: the table's full index counts the rows the old file held when it
  can still be read (an index is a separate b-tree); otherwise the skipped rowid ranges give
  an upper bound (row ids are insertion order; purged rows leave gaps too).
* The new file gets a new identity (this gateway's id, created now, `stored` never below what
  the old identity said) and a fresh companion.

Invariants: nothing that holds data is deleted. The damaged file and its `-wal` and companion
are renamed aside with a UTC timestamp (`buffer.db.damaged-20261130T101500Z`, ...), and only
after the new file is complete (the `-shm`, an index of the `-wal`, and an empty `-wal` are
removed: either would be taken for the new file's); the new file is built in a private folder
beside the buffer and renamed into place. Until that rename the buffer path is either the
damaged file or nothing, and a daemon started in between refuses (its companion says a file
existed). The buffer's lock is held throughout, and taken without waiting: a running daemon
makes recovery refuse.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from punchgate.sync import buffer_identity, buffer_outbox, buffer_pagescan, buffer_schema, migrations
from punchgate.sync.buffer_file import make_engine, migrate_checked
from punchgate.sync.buffer_identity import Identity
from punchgate.sync.buffer_inspect import HEADER_SIZE, header_problem
from punchgate.sync.buffer_paths import (
    BufferLock,
    BufferPaths,
    create_private_file,
    fsync_folder,
    match_owner,
    private_folder,
)

# Tables copied row by row; `identity` is not copied: the new file gets a new identity.
SALVAGED = ("punches", "batch_seq", "device_meta")
_MIN_ROWID = -(2**63)
_MAX_ROWID = 2**63 - 1
_BATCH = 1000
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
# Reads that fail past this many skipped ranges of one table stop the table (a file this
# broken is better read by the sqlite3 shell's .recover, which also scans free pages).
_MAX_GAPS = 10_000


class RecoverError(Exception):
    """Recovery could not run (nothing to recover, no room); nothing was changed."""


@dataclass
class TableSalvage:
    """What was read from one table, and what could not be."""

    table: str
    read: int = 0  # rows SQLite returned
    written: int = 0  # rows in the new file (those found by the page scan included)
    dropped: int = 0  # rows read but unusable (broken payload, constraint violations)
    scanned: int = 0  # rows the tree walk missed and the page scan found
    gaps: list[tuple[int, int | None]] = field(default_factory=list)  # (last good rowid, next) skipped
    gap_rowids: int | None = 0  # rowids inside the skipped ranges; None: a tail of unknown length
    indexed: int | None = None  # rows the table's own index lists (when it is readable)
    error: str | None = None  # the table could not be read at all

    @property
    def lost_estimate(self) -> int | None:
        """Rows the old file held that the new one lacks: by the table's index when it could be
        read, else the rowids in the skipped ranges (an upper bound); None when unknown."""
        if self.indexed is not None:
            return max(0, self.indexed - self.written)
        if self.error or self.gap_rowids is None:
            return None
        return max(0, self.gap_rowids - self.scanned) + self.dropped

    def describe(self, stored_ever: int | None = None) -> str:
        """One line; `stored_ever` (the old identity's count, for punches) bounds an otherwise
        unknown loss."""
        text = f"{self.table}: {self.read} rows read"
        if self.scanned:
            text += f", {self.scanned} more found by reading its pages directly"
        text += f", {self.written} written"
        if self.dropped:
            text += f", {self.dropped} dropped (damaged)"
        if self.error:
            text += f"; the table could not be read: {self.error}"
        elif self.gaps:
            text += f"; {len(self.gaps)} unreadable ranges skipped"
        lost = self.lost_estimate
        if lost is None and stored_ever is not None:
            bound = max(0, stored_ever - self.written)
            return f"{text}; rows lost: at most {bound} (of {stored_ever} ever stored; purged ones count here too)"
        if lost is None:
            return f"{text}; rows lost: unknown"
        how = "by its index" if self.indexed is not None else "at most, by row ids"
        return f"{text}; rows lost: {lost} ({how})" if lost or self.gaps or self.error else text


@dataclass
class RecoverReport:
    """What `recover` did: for the operator, and for tests."""

    path: Path
    kept: list[Path] = field(default_factory=list)
    header_rebuilt: int | None = None  # the page size the rebuilt header declares
    source_error: str | None = None  # SQLite could not read the file at all
    source_version: int | None = None
    old_identity: Identity | None = None
    new_identity: Identity | None = None
    tables: list[TableSalvage] = field(default_factory=list)
    pending: int = 0
    delivered: int = 0
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> TableSalvage | None:
        return next((t for t in self.tables if t.table == name), None)

    @property
    def lost_estimate(self) -> int | None:
        """Rows lost over all tables (None when a table's loss cannot be estimated)."""
        estimates = [t.lost_estimate for t in self.tables]
        return None if None in estimates else sum(e for e in estimates if e is not None)

    def lines(self) -> list[str]:
        out = [f"recovered buffer {self.path}"]
        if self.source_error:
            out.append(f"  SQLite could not read the file itself: {self.source_error}")
        if self.header_rebuilt:
            out.append(f"  its damaged header was rebuilt (page size {self.header_rebuilt}) to read it")
        stored = self.old_identity.stored if self.old_identity is not None else None
        out += [f"  {t.describe(stored if t.table == 'punches' else None)}" for t in self.tables]
        if self.old_identity is not None:
            out.append(f"  old identity: {self.old_identity.describe()}")
        if self.new_identity is not None:
            out.append(
                f"  new file: {self.pending} pending, {self.delivered} delivered punches; identity {self.new_identity.describe()}"
            )
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  kept aside: {path}" for path in self.kept]
        return out


def recover(path: Path, *, gateway_id: str) -> RecoverReport:
    """Salvage the buffer at `path` into a new file there; keep the old files aside.

    Raises `BufferLockedError` while another process holds the buffer, `RecoverError` when
    there is nothing to recover or no room; in both cases nothing was changed.
    """
    paths = BufferPaths(path)
    if not paths.folder.is_dir():
        raise RecoverError(f"{paths.folder} does not exist: nothing to recover")
    lock = BufferLock.acquire(paths, wait=0.0, purpose="recover")
    try:
        present = [p for p in (paths.db, paths.wal, paths.companion) if p.exists()]
        if not present:
            raise RecoverError(f"{path}: no buffer file and no companion: nothing to recover")
        _check_room(paths)
        stamp = _unused_stamp(paths)
        work = paths.folder / f"{paths.db.name}.recover-{stamp}"
        private_folder(work)
        try:
            report = RecoverReport(path)
            new = BufferPaths(work / paths.db.name)
            _build(paths, new, work, report, gateway_id)
            _swap(paths, new, stamp, report)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return report
    finally:
        lock.release()


def _aside(paths: BufferPaths, stamp: str) -> Path:
    return paths.db.with_name(f"{paths.db.name}.damaged-{stamp}")


def _unused_stamp(paths: BufferPaths) -> str:
    """A UTC timestamp no earlier recovery's kept files use (a suffix when one second holds two)."""
    base = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    stamp, n = base, 1
    while any(p.name.startswith(_aside(paths, stamp).name) for p in paths.folder.iterdir()):
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def _check_room(paths: BufferPaths) -> None:
    size = sum(p.stat().st_size for p in (paths.db, paths.wal) if p.exists())
    need = 2 * size + 16 * 1024 * 1024  # the new file, and a copy when the header needs rebuilding
    free = shutil.disk_usage(paths.folder).free
    if free < need:
        raise RecoverError(
            f"{paths.folder}: {free // 2**20} MB free, recovery needs about {need // 2**20} MB; free some space"
        )


# --- the source ---------------------------------------------------------------------------------
def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    target = f"{path.as_uri()}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(target, uri=read_only, isolation_level=None, check_same_thread=False)
    # Lets SQLite read a file shorter than its header says (a cut-short file is otherwise
    # "malformed" as a whole); nothing is written through this connection.
    conn.execute("PRAGMA writable_schema = ON")
    return conn


def _schema_readable(conn: sqlite3.Connection) -> bool:
    try:
        names = {str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return False
    return "punches" in names


@dataclass
class _Source:
    """Where the rows come from: a SQLite connection (None: SQLite cannot read the file), and
    the files the page scan reads (None: nothing to scan) with their page size (None: the
    header's)."""

    conn: sqlite3.Connection | None = None
    files: BufferPaths | None = None
    page_size: int | None = None


def _open_source(paths: BufferPaths, work: Path, report: RecoverReport) -> _Source:
    """The damaged file as SQLite and the page scan can read it: as it is (read-only), or a
    copy with a rebuilt header, or (the file empty or gone) the database its WAL describes."""
    size = paths.db.stat().st_size if paths.db.exists() else 0
    if size == 0:
        report.source_error = (
            "the file is missing" if not paths.db.exists() else "the file is empty (0 bytes)"
        )
        return _from_wal(paths, work, report)
    with paths.db.open("rb") as f:
        header = f.read(HEADER_SIZE)
    if header_problem(header) is None:
        conn = _connect(paths.db, read_only=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return _Source(conn, paths)
        except sqlite3.DatabaseError as exc:
            report.source_error = f"SQLite cannot read it: {exc}"
            conn.close()
            return _Source(None, paths)
    source = _rebuilt_header_copy(paths, work, report)
    if source.conn is None and size % 4096 == 0:  # scan as SQLite's default page size
        return _Source(None, paths, 4096)
    return source


def _from_wal(paths: BufferPaths, work: Path, report: RecoverReport) -> _Source:
    """The file is empty or gone but its WAL is not: the pages the WAL holds (the most recently
    written ones, so the newest punches) make a partial database to read from."""
    if not paths.wal.exists() or paths.wal.stat().st_size == 0:
        return _Source()
    image = BufferPaths(work / "source.db")
    page_size = buffer_pagescan.wal_image(paths.wal, image.db)
    if page_size is None:
        return _Source()
    report.notes.append(f"read from {paths.wal.name} alone: it holds the most recently written pages")
    conn = _connect(image.db, read_only=False)
    if _schema_readable(conn):
        return _Source(conn, image, page_size)
    conn.close()
    return _Source(None, image, page_size)


def _template_header(work: Path, page_size: int) -> bytes:
    """The header of a fresh, empty WAL-mode database with `page_size` pages."""
    probe = work / f"template-{page_size}.db"
    conn = sqlite3.connect(probe, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA user_version = 1")  # any write, so that the header is written
    finally:
        conn.close()
    with probe.open("rb") as f:
        header = bytearray(f.read(HEADER_SIZE))
    header[60:64] = bytes(4)  # the schema version is not known: `_source_version` infers it
    return bytes(header)


def _rebuilt_header_copy(paths: BufferPaths, work: Path, report: RecoverReport) -> _Source:
    """Copy the file (and its WAL) once, then give the copy a fresh header for each page size
    its length allows, until SQLite can read its schema from it (read-only: a wrong guess must
    not make SQLite checkpoint or reset the copied WAL)."""
    size = paths.db.stat().st_size
    copy = BufferPaths(work / "source.db")
    shutil.copyfile(paths.db, copy.db)
    if paths.wal.exists():
        shutil.copyfile(paths.wal, copy.wal)
    for page_size in (p for p in _PAGE_SIZES if size % p == 0 and size >= p):
        header = bytearray(_template_header(work, page_size))
        header[28:32] = (size // page_size).to_bytes(4, "big")  # the page count: the file's
        header[92:96] = header[24:28]  # ... and valid (version-valid-for = change counter)
        with copy.db.open("r+b") as f:
            f.write(bytes(header))
        copy.shm.unlink(missing_ok=True)
        conn = _connect(copy.db, read_only=True)
        if _schema_readable(conn):
            report.header_rebuilt = page_size
            return _Source(conn, copy, page_size)
        conn.close()
    report.source_error = "its header is damaged and no page size makes its schema readable"
    return _Source()


def _source_version(conn: sqlite3.Connection, header_rebuilt: bool) -> int:
    """The damaged file's schema version: its `user_version`, or (header rebuilt, so the
    number is gone) what its tables say."""
    if not header_rebuilt:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if buffer_schema.identity.name in tables:
        return 3
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(punches)")}
    return 1 if "device_serial" in columns else 2


def _read_identity(conn: sqlite3.Connection) -> Identity | None:
    t, c = buffer_schema.identity, buffer_schema.identity.c
    try:
        row = conn.execute(
            f"SELECT {c.gateway_id.name}, {c.created.name}, {c.stored.name} FROM {t.name}"
        ).fetchone()
    except sqlite3.DatabaseError:
        return None
    if row is None:
        return None
    try:
        return Identity(None if row[0] is None else str(row[0]), str(row[1]), int(row[2]))
    except (TypeError, ValueError):
        return None


# --- reading one table, around what cannot be read ----------------------------------------------
def _quoted(name: str) -> str:
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


def _read_table(
    conn: sqlite3.Connection, table: str, columns: Sequence[str], salvage: TableSalvage
) -> Iterator[list[tuple[Any, ...]]]:
    """The table's readable rows (rowid first), in batches, stepping over unreadable ranges."""
    select = (
        f"SELECT rowid, {', '.join(map(_quoted, columns))} FROM {_quoted(table)} NOT INDEXED"
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
                if len(batch) == _BATCH:
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
        row = conn.execute(f"SELECT max(rowid) FROM {_quoted(table)}").fetchone()
    except sqlite3.DatabaseError:
        return None
    return max(0, int(row[0]) - max(after, 0)) if row and row[0] is not None else None


def _indexed_count(conn: sqlite3.Connection, table: str) -> int | None:
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
                conn.execute(f"SELECT count(*) FROM {_quoted(table)} INDEXED BY {_quoted(index)}").fetchone()[
                    0
                ]
            )
        except sqlite3.DatabaseError:
            continue
    return None


# --- writing the new file -----------------------------------------------------------------------
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
            f"INSERT OR IGNORE INTO {_quoted(table)} (rowid, {', '.join(map(_quoted, columns))})"
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
        src.execute(f"SELECT rowid FROM {_quoted(table)} NOT INDEXED LIMIT 0").fetchall()
    except sqlite3.DatabaseError as exc:
        salvage.error = str(exc)
        return
    if not source_columns:
        salvage.error = "the table is missing"
        return
    writer = _Writer(
        dst, table, [name for name, alias in _columns(dst, table) if not alias and name in source_columns]
    )
    for batch in _read_table(src, table, writer.columns, salvage):
        salvage.read += len(batch)
        salvage.written += writer.write(batch)
    salvage.dropped = salvage.read - salvage.written
    if salvage.gaps:
        salvage.indexed = _indexed_count(src, table)


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
        if len(batch) >= _BATCH:
            salvage.scanned += writer.write(batch)
            batch = []
    salvage.scanned += writer.write(batch)
    salvage.written += salvage.scanned


def _scan_wanted(source: _Source, report: RecoverReport) -> bool:
    """Whether the page scan may find punches the tree walk did not."""
    punches = report.table("punches")
    walked_all = punches is not None and not punches.gaps and not punches.error
    return source.files is not None and not walked_all


def _build(paths: BufferPaths, new: BufferPaths, work: Path, report: RecoverReport, gateway_id: str) -> None:
    """The new buffer file in `new`, with everything readable from the damaged one."""
    source = _open_source(paths, work, report)
    src = source.conn
    try:
        version = migrations.LATEST_VERSION
        if src is not None:
            version = min(_source_version(src, report.header_rebuilt is not None), migrations.LATEST_VERSION)
            report.source_version = version
            report.old_identity = _read_identity(src)
        create_private_file(new.db)
        engine = make_engine(new.db)
        try:
            with engine.execution_options(write=True).begin() as conn:
                migrations.migrate(conn, migrations.STEPS[:version])
                if src is not None:
                    for table in SALVAGED:
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


def _swap(paths: BufferPaths, new: BufferPaths, stamp: str, report: RecoverReport) -> None:
    """Rename the damaged files aside, the new one into place, then write the companion."""
    for derived in (new.wal, new.shm):
        if derived.exists() and derived.stat().st_size == 0:
            derived.unlink()
    if new.wal.exists():
        raise RecoverError(f"{new.db}: the new file's WAL was not checkpointed; nothing was changed")
    aside = _aside(paths, stamp)
    # The -shm is only an index of the -wal, and an empty -wal holds nothing: neither is
    # evidence, and either left at the buffer's path would be taken for the new file's.
    for derived in (paths.shm, paths.wal):
        if derived == paths.shm or (derived.exists() and derived.stat().st_size == 0):
            derived.unlink(missing_ok=True)
    moves = [
        (paths.db, aside),
        (paths.wal, aside.with_name(aside.name + "-wal")),
        (paths.companion, aside.with_name(aside.name + ".id")),
    ]
    for source, target in moves:
        if source.exists():
            source.replace(target)
            report.kept.append(target)
    fsync_folder(paths.folder)
    match_owner(new.db, paths.folder)
    new.db.replace(paths.db)
    fsync_folder(paths.folder)
    assert report.new_identity is not None
    buffer_identity.write_companion(paths, report.new_identity)
