"""The sink's database engine: opening it (SQLite or PostgreSQL) and migrating it.

SQLite runs in WAL mode with `synchronous=FULL`, so a commit survives a power cut before the
sink confirms anything. The schema comes from the Alembic revisions only (`migrations/`);
`upgrade` runs them at every start, with several sinks starting at once taking turns.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_DB = "punchgate-sink.db"


def database_url(value: str) -> str:
    """A SQLAlchemy URL from what `--db` got: a URL, or a file path for SQLite."""
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut: then we confirm
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create(url: str) -> Engine:
    """An engine for `url` (see `database_url`), with SQLite set up for durable commits."""
    engine = sa.create_engine(database_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# Several sinks may start at once on one database: on PostgreSQL they take turns on this
# advisory lock (any constant; "punchgat" in ASCII), on SQLite a loser retries.
_MIGRATION_LOCK = 0x70756E6368676174


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision (Alembic, programmatically)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    for attempt in range(10):
        try:
            with engine.connect() as conn:
                postgres = conn.dialect.name == "postgresql"
                if postgres:
                    conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
                    conn.commit()
                try:
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
                    conn.commit()
                finally:
                    if postgres:
                        conn.rollback()
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                        conn.commit()
            return
        except sa.exc.OperationalError as exc:
            busy = "locked" in str(exc.orig) or "busy" in str(exc.orig)
            if engine.dialect.name != "sqlite" or attempt == 9 or not busy:
                raise
            time.sleep(0.2 * (attempt + 1))  # another sink migrates the same file right now


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
        except sa.exc.DBAPIError:
            return None
