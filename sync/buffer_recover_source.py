"""Opening a damaged buffer file for recovery, however much of it SQLite can still read.

In order of preference: the file as it is (read-only); a copy whose damaged 100-byte header is
rebuilt from a fresh database's, for each page size the file's length allows, until SQLite can
read its schema; or, the file being empty or gone, the database its `-wal` alone describes.
`Source` says what came of it: a SQLite connection, and the files the page scan reads.
Connections are made with `writable_schema` on, so that a cut-short file can be read at all.
Also here: the damaged file's schema version and the identity it held.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from punchgate.sync import buffer_pagescan, buffer_schema
from punchgate.sync.buffer_identity import Identity
from punchgate.sync.buffer_inspect import HEADER_SIZE, header_problem
from punchgate.sync.buffer_paths import BufferPaths
from punchgate.sync.buffer_recover_report import RecoverReport

# Page sizes a rebuilt header is tried with, SQLite's default first.
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)


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
class Source:
    """Where the rows come from: a SQLite connection (None: SQLite cannot read the file), and
    the files the page scan reads (None: nothing to scan) with their page size (None: the
    header's)."""

    conn: sqlite3.Connection | None = None
    files: BufferPaths | None = None
    page_size: int | None = None


def open_source(paths: BufferPaths, work: Path, report: RecoverReport) -> Source:
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
            return Source(conn, paths)
        except sqlite3.DatabaseError as exc:
            report.source_error = f"SQLite cannot read it: {exc}"
            conn.close()
            return Source(None, paths)
    source = _rebuilt_header_copy(paths, work, report)
    if source.conn is None and size % 4096 == 0:  # scan as SQLite's default page size
        return Source(None, paths, 4096)
    return source


def _from_wal(paths: BufferPaths, work: Path, report: RecoverReport) -> Source:
    """The file is empty or gone but its WAL is not: the pages the WAL holds (the most recently
    written ones, so the newest punches) make a partial database to read from."""
    if not paths.wal.exists() or paths.wal.stat().st_size == 0:
        return Source()
    image = BufferPaths(work / "source.db")
    page_size = buffer_pagescan.wal_image(paths.wal, image.db)
    if page_size is None:
        return Source()
    report.notes.append(f"read from {paths.wal.name} alone: it holds the most recently written pages")
    conn = _connect(image.db, read_only=False)
    if _schema_readable(conn):
        return Source(conn, image, page_size)
    conn.close()
    return Source(None, image, page_size)


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
    header[60:64] = bytes(4)  # the schema version is not known: `source_version` infers it
    return bytes(header)


def _rebuilt_header_copy(paths: BufferPaths, work: Path, report: RecoverReport) -> Source:
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
            return Source(conn, copy, page_size)
        conn.close()
    report.source_error = "its header is damaged and no page size makes its schema readable"
    return Source()


def source_version(conn: sqlite3.Connection, header_rebuilt: bool) -> int:
    """The damaged file's schema version: its `user_version`, or (header rebuilt, so the
    number is gone) what its tables say."""
    if not header_rebuilt:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if buffer_schema.staged_punches.name in tables:
        return 8  # at least (migrations._v8_staged_punches): its staged punches are salvaged too
    if buffer_schema.identity.name in tables:
        return 3
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(punches)")}
    return 1 if "device_serial" in columns else 2


def read_identity(conn: sqlite3.Connection) -> Identity | None:
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
