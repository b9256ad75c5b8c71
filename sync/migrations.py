"""Versioned schema steps for the SQLite buffer.

Why not alembic: the buffer is one embedded file owned by one daemon, its schema is a few
tables, and every site upgrades in place unattended. A list of plain SQL steps, numbered by
SQLite's own `PRAGMA user_version` and each applied inside the same transaction as the
version bump (SQLite DDL is transactional), gives the same guarantees without a migration
environment, script directory or extra dependency. The steps are frozen SQL, never derived
from the current table definitions, so an old file always goes through the same path.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

Step = Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    conn.exec_driver_sql(
        """
        CREATE TABLE punches (
            pk INTEGER PRIMARY KEY,           -- insertion order: 'oldest first' means lowest pk
            id TEXT NOT NULL,                 -- stable record id (docs/mqtt-contract.md)
            device TEXT NOT NULL,
            device_serial TEXT NOT NULL,
            user_id TEXT NOT NULL,
            local_time TEXT NOT NULL,
            utc_time TEXT NOT NULL,
            utc_offset_seconds INTEGER NOT NULL,
            state INTEGER NOT NULL,
            state_name TEXT,
            verify INTEGER NOT NULL,
            verify_name TEXT,
            work_code INTEGER NOT NULL,
            source TEXT NOT NULL,
            historical INTEGER NOT NULL,
            flags TEXT NOT NULL,              -- comma-separated time flags
            raw BLOB NOT NULL,
            payload TEXT NOT NULL,            -- the contract record as JSON, rendered once at insert
            stored_at REAL NOT NULL,          -- unix time of the durable commit
            delivered_at REAL                 -- unix time of the PUBACK; NULL while pending
        )
        """
    )
    conn.exec_driver_sql("CREATE UNIQUE INDEX ux_punches_id ON punches (id)")
    # Partial indexes keep the outbox queries proportional to what is pending, not to history.
    conn.exec_driver_sql("CREATE INDEX ix_punches_pending ON punches (pk) WHERE delivered_at IS NULL")
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_pending_device ON punches (device) WHERE delivered_at IS NULL"
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_delivered ON punches (delivered_at) WHERE delivered_at IS NOT NULL"
    )
    conn.exec_driver_sql(
        """
        CREATE TABLE batch_seq (
            device TEXT PRIMARY KEY,
            reserved_until INTEGER NOT NULL   -- highest batch seq handed out or reserved
        )
        """
    )
    conn.exec_driver_sql(
        """
        CREATE TABLE device_meta (
            device TEXT PRIMARY KEY,
            data TEXT NOT NULL,               -- JSON object
            updated_at REAL NOT NULL
        )
        """
    )


# Index i holds the step that takes the schema from version i to i + 1. Append only.
STEPS: list[Step] = [_v1_initial]
LATEST_VERSION = len(STEPS)


class SchemaTooNewError(Exception):
    """The buffer file was written by a newer punchgate; refusing to touch it."""


def current_version(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def migrate(conn: Connection, steps: list[Step] | None = None) -> tuple[int, int]:
    """Bring the schema up to date inside the caller's transaction; returns (from, to)."""
    steps = STEPS if steps is None else steps
    start = current_version(conn)
    if start > len(steps):
        raise SchemaTooNewError(
            f"buffer schema is version {start}, this punchgate knows up to {len(steps)}; upgrade punchgate"
        )
    for version in range(start, len(steps)):
        steps[version](conn)
        # PRAGMA takes no bound parameters; the value is our own integer.
        conn.exec_driver_sql(f"PRAGMA user_version = {version + 1}")
    return start, len(steps)
