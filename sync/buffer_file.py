"""Opening the buffer file safely: durability settings, migration, and the schema check.

Design: one SQLite file in WAL mode, `synchronous=FULL`, reached through one SQLAlchemy engine
whose pooled connections are all configured the same way on connect. Invariants:

* Durability: every connection runs WAL with `synchronous=FULL`, so each commit fsyncs the
  WAL and a punch `add_punches` returned survives a power cut. A file that cannot be put in
  WAL mode (network filesystems, read-only media) is refused with `StoreError`, never used in
  a weaker mode.
* Transactions are explicit: pysqlite's implicit transactions are off (`isolation_level =
  None`) and SQLAlchemy's "begin" event issues BEGIN itself, so migration DDL runs inside a
  transaction too. Writers (engines with `execution_options(write=True)`) take the write lock
  up front (`BEGIN IMMEDIATE`), so a read-then-write transaction never fails with
  SQLITE_BUSY_SNAPSHOT; readers stay DEFERRED and never block writers.
* The schema comes only from `punchgate.sync.migrations`, applied in one IMMEDIATE
  transaction together with the `user_version` bumps; a file from a newer punchgate is
  refused untouched. In that same transaction `buffer_schema.missing_columns` confirms the
  file has every column the store names; if not, the open fails and nothing is committed.
  Nothing here (or anywhere in the store) creates or alters a table.
* A damaged, missing or foreign file is refused with `BufferRefusedError`, untouched, before
  anything is migrated: an empty file (SQLite would take it for a new database), a missing
  file whose companion says it existed, a file that is not SQLite or is cut short
  (`buffer_inspect`), one that fails `PRAGMA quick_check`, and one whose identity disagrees
  with its companion or the configured gateway (`buffer_identity`). Only when there is no file
  and no companion is a new one made, and it is made whole or not at all: migrated under a
  temporary name, then renamed into place.
* Whoever opens the file holds its lock (`buffer_paths.BufferLock`) until it closes it; the
  files are created 0600 in a 0700 folder.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

from punchgate.sync import buffer_identity, buffer_schema, migrations
from punchgate.sync.buffer_clean_stop import check_due, read_clean_stop
from punchgate.sync.buffer_errors import BufferRefusedError, StoreError
from punchgate.sync.buffer_identity import CompanionError, CompanionWriter, Finding, Identity
from punchgate.sync.buffer_inspect import inspect_file
from punchgate.sync.buffer_paths import (
    BufferLock,
    BufferPaths,
    create_private_file,
    fsync_folder,
    match_owner,
    private_folder,
    tighten,
)

# How long a connection waits for another writer's lock before SQLITE_BUSY (milliseconds).
BUSY_TIMEOUT_MS = 30000
# Prepared statements the driver keeps per connection (Python's default: 128). Lookups by id
# list one `?` per id, so each length is a statement of its own, and the caches filled with
# them: SQLite held 24 MB 40 s into a 2,000-terminal fleet's first reads, and 47 MB at 90 s
# (sqlite3_memory_used); 9 MB with 16. The few statements used all the time stay cached.
CACHED_STATEMENTS = 16
# How long an opening store waits for the buffer's lock (a `punchgate buffer check` probing it).
LOCK_WAIT = 3.0
# SQLite's primary result codes that mean "this is not a (sound) database file".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# How many lines of a failed quick_check go into the refusal.
_CHECK_LINES = 3


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """An engine on a migrated, checked buffer file, the schema versions before and after, and
    what the store keeps for the file's lifetime: its lock, identity and companion writer."""

    engine: Engine
    from_version: int
    to_version: int
    lock: BufferLock
    identity: Identity
    companion: CompanionWriter
    created: bool = False
    warnings: list[Finding] = field(default_factory=list)
    tightened: list[str] = field(default_factory=list)
    checked: float = 0.0  # when the file last passed quick_check (unix seconds)
    why_checked: str | None = None  # why this open ran it (`check_due`); None: it did not


def configure_connection(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    """Run on every new pooled connection: explicit transactions, busy timeout, WAL, FULL sync."""
    # Let SQLAlchemy's "begin" event issue BEGIN itself: pysqlite's implicit transactions
    # would otherwise run DDL (migrations) outside any transaction.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"SQLite refused WAL mode (got {mode!r}); buffer on a network filesystem?")
        # FULL: the WAL is fsynced at every commit, so "stored" means "survives power loss".
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def begin(conn: Connection) -> None:
    """SQLAlchemy "begin" hook: IMMEDIATE for writer engines, DEFERRED for readers."""
    mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def sqlite_damage(exc: BaseException) -> str | None:
    """SQLite's message when `exc` (or the DB-API error SQLAlchemy wrapped) says the file is
    corrupt or not a database; None for any other error."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, sqlite3.DatabaseError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return str(orig)
    return None


def make_engine(path: Path) -> Engine:
    """An engine on `path` whose connections are configured for the buffer."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"cached_statements": CACHED_STATEMENTS})
    event.listen(engine, "connect", configure_connection)
    event.listen(engine, "begin", begin)
    return engine


def migrate_checked(conn: Connection, path: Path) -> tuple[int, int]:
    """Migrate in the caller's write transaction and confirm every column the store names."""
    before, after = migrations.migrate(conn)
    missing = buffer_schema.missing_columns(conn)
    if missing:
        # Raised inside the transaction: whatever the migration did is rolled back.
        raise StoreError(
            f"{path}: cannot open the buffer: the migrated schema (version {after}) lacks "
            f"columns the store uses: {', '.join(missing)}"
        )
    return before, after


def open_file(path: Path, *, gateway_id: str | None = None, lock_wait: float | None = None) -> OpenedFile:
    """Create or open the buffer at `path`, check it, migrate it to the latest schema.

    Raises `BufferRefusedError` (the file is left as it was) when the file must not be used,
    and `StoreError` naming the file for anything else that makes it unusable. On success the
    caller owns the lock and must `release()` it after disposing of the engine.
    """
    paths = BufferPaths(path)
    private_folder(paths.folder)
    lock = BufferLock.acquire(paths, wait=LOCK_WAIT if lock_wait is None else lock_wait)
    try:
        return _open_locked(paths, gateway_id, lock)
    except BaseException:
        lock.release()
        raise


def _open_locked(paths: BufferPaths, gateway_id: str | None, lock: BufferLock) -> OpenedFile:
    warnings: list[Finding] = []
    try:
        companion = buffer_identity.read_companion(paths.companion)
    except CompanionError as exc:
        companion = None
        warnings.append(Finding("companion_unreadable", f"{exc}; it is written anew", refuse=False))
    refusals = buffer_identity.file_findings(paths, inspect_file(paths), companion)
    if refusals:
        raise BufferRefusedError(paths.db, refusals[0].problem, refusals[0].detail)
    created = not paths.db.exists()
    if created:
        _create(paths)
    now = time.time()
    # Decided before anything opens the file (opening it makes a WAL).
    clean = None if created else read_clean_stop(paths.companion)
    why_check = None if created else check_due(paths, clean, now=now)
    engine = make_engine(paths.db)
    try:
        checked = now
        if why_check is not None:
            _quick_check(engine, paths)
        elif clean is not None:  # vouched for by the last clean stop: its check's time goes on
            checked = clean.checked
        before, after, identity, found = _migrate_and_identify(engine, paths, gateway_id, companion)
    except BaseException:
        engine.dispose()
        raise
    tightened = tighten(paths)  # only now: a refused file keeps even its mode
    if companion is None and not created and not warnings:
        warnings.append(
            Finding(
                "companion_missing",
                f"{paths.companion.name} was missing (first start since the upgrade that added it, "
                "or deleted); it is written anew",
                refuse=False,
            )
        )
    warnings += found
    if companion != identity:
        try:
            buffer_identity.write_companion(paths, identity)
        except OSError as exc:
            engine.dispose()
            raise StoreError(f"{paths.db}: cannot write {paths.companion.name}: {exc}") from exc
    return OpenedFile(
        engine,
        before,
        after,
        lock,
        identity,
        CompanionWriter(paths, identity),
        created=created,
        warnings=warnings,
        tightened=tightened,
        checked=checked,
        why_checked=why_check,
    )


def _migrate_and_identify(
    engine: Engine, paths: BufferPaths, gateway_id: str | None, companion: Identity | None
) -> tuple[int, int, Identity, list[Finding]]:
    """Migrate, claim the file for `gateway_id` and compare identities, in one transaction: a
    refusal rolls the migration and the claim back."""
    try:
        with engine.execution_options(write=True).begin() as conn:
            before, after = migrate_checked(conn, paths.db)
            if gateway_id is not None:
                buffer_identity.claim(conn, gateway_id)
            identity = buffer_identity.read_identity(conn)
            found = buffer_identity.identity_findings(
                identity, companion, gateway_id, companion_name=paths.companion.name
            )
            refusals = [f for f in found if f.refuse]
            if refusals:
                raise BufferRefusedError(paths.db, refusals[0].problem, refusals[0].detail)
            assert identity is not None  # identity_findings refuses a file without one
    except StoreError:  # BufferRefusedError too: raised above, already says what is wrong
        raise
    except migrations.SchemaTooNewError as exc:
        raise StoreError(f"{paths.db}: {exc}") from exc
    except Exception as exc:
        damage = sqlite_damage(exc)
        if damage is not None:
            raise BufferRefusedError(paths.db, "corrupt", f"SQLite cannot read it: {damage}") from None
        raise StoreError(f"{paths.db}: cannot open the buffer: {exc}") from exc
    return before, after, identity, [f for f in found if not f.refuse]


def _quick_check(engine: Engine, paths: BufferPaths) -> None:
    """Refuse a file that fails SQLite's `PRAGMA quick_check` (b-tree structure, page usage;
    O(size of the file), without the index cross-checks of `integrity_check`)."""
    try:
        with engine.connect() as conn:
            lines = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check")]
    except Exception as exc:
        damage = sqlite_damage(exc)
        if damage is None:
            raise StoreError(f"{paths.db}: cannot open the buffer: {exc}") from exc
        raise BufferRefusedError(paths.db, "corrupt", f"SQLite cannot read it: {damage}") from None
    if lines != ["ok"]:
        shown = "; ".join(" ".join(line.split()) for line in lines[:_CHECK_LINES])
        more = f" (and {len(lines) - _CHECK_LINES} more)" if len(lines) > _CHECK_LINES else ""
        raise BufferRefusedError(paths.db, "corrupt", f"SQLite's quick_check fails: {shown}{more}")


def _create(paths: BufferPaths) -> None:
    """Make a new buffer file whole or not at all: migrate it under a temporary name, 0600,
    then rename it into place (a crash leaves no half-made file at `paths.db`)."""
    temp = BufferPaths(paths.db.with_name(paths.db.name + ".new"))
    for leftover in (temp.db, temp.wal, temp.shm):
        leftover.unlink(missing_ok=True)
    create_private_file(temp.db)
    engine = make_engine(temp.db)
    try:
        with engine.execution_options(write=True).begin() as conn:
            migrate_checked(conn, paths.db)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()  # the last connection closes: SQLite removes the empty WAL
        if temp.wal.exists() and temp.wal.stat().st_size:
            raise StoreError(f"{temp.db}: the new buffer's WAL was not checkpointed")
        for derived in (temp.wal, temp.shm):
            derived.unlink(missing_ok=True)
        match_owner(temp.db, paths.folder)
        temp.db.replace(paths.db)
        fsync_folder(paths.folder)
    except BaseException as exc:
        engine.dispose()
        for leftover in (temp.db, temp.wal, temp.shm):
            with contextlib.suppress(OSError):
                leftover.unlink()
        if isinstance(exc, Exception) and not isinstance(exc, StoreError):
            raise StoreError(f"{paths.db}: cannot create the buffer: {exc}") from exc
        raise
