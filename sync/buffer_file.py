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
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

from punchgate.sync import buffer_schema, migrations
from punchgate.sync.buffer_errors import StoreError

# How long a connection waits for another writer's lock before SQLITE_BUSY (milliseconds).
BUSY_TIMEOUT_MS = 30000


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """An engine on a migrated, checked buffer file, and the schema versions before and after."""

    engine: Engine
    from_version: int
    to_version: int


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


def open_file(path: Path) -> OpenedFile:
    """Create or open the buffer at `path`, migrate it to the latest schema and check it.

    Raises `StoreError` naming the file for anything that makes it unusable; the engine is
    disposed of in that case.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", configure_connection)
    event.listen(engine, "begin", begin)
    try:
        with engine.execution_options(write=True).begin() as conn:
            before, after = migrations.migrate(conn)
            missing = buffer_schema.missing_columns(conn)
            if missing:
                # Raised inside the transaction: whatever the migration did is rolled back.
                raise StoreError(
                    f"the migrated schema (version {after}) lacks columns the store uses: "
                    f"{', '.join(missing)}"
                )
    except migrations.SchemaTooNewError as exc:
        engine.dispose()
        raise StoreError(f"{path}: {exc}") from exc
    except Exception as exc:
        engine.dispose()
        raise StoreError(f"{path}: cannot open the buffer: {exc}") from exc
    return OpenedFile(engine, before, after)
