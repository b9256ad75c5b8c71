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

The work is shared out: `buffer_recover_source` opens the damaged file, `buffer_recover_read`
reads its tables around the damage, `buffer_recover_build` writes the new file, and
`buffer_recover_report` holds what the operator is told. This module takes the lock, checks
the room, and swaps the files.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from punchgate.sync import buffer_identity
from punchgate.sync.buffer_paths import BufferLock, BufferPaths, fsync_folder, match_owner, private_folder
from punchgate.sync.buffer_recover_build import SALVAGED, build
from punchgate.sync.buffer_recover_report import RecoverError, RecoverReport, TableSalvage

__all__ = ["SALVAGED", "RecoverError", "RecoverReport", "TableSalvage", "recover"]


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
            build(paths, new, work, report, gateway_id)
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
