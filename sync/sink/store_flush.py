"""Writing one flush: every item it carries, in the caller's transaction.

Invariants:

* One punch, one row, ever: `punches.id` is the primary key and every insert is
  `ON CONFLICT DO NOTHING`, so a re-sent, re-delivered or replayed punch changes nothing.
* `write` commits everything one flush carries in one transaction; the caller acknowledges the
  messages and confirms the punches only after it returned (the commit is durable: SQLite runs
  in WAL mode with `synchronous=FULL`, PostgreSQL commits synchronously unless told otherwise).

States, events and digests are written by `upserts`, which keeps their own rules.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from punchgate.sync.sink import tables as t
from punchgate.sync.sink.items import (
    DeadLetter,
    DeviceState,
    Digests,
    Event,
    GatewayState,
    Item,
    PunchBatch,
    Written,
)
from punchgate.sync.sink.upserts import (
    dialect_insert,
    insert_event,
    parse_time,
    replace_digests,
    upsert_device_state,
    upsert_gateway_state,
)


def punch_row(batch: PunchBatch, record: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {
        "id": record["id"],
        "gateway": batch.gateway,
        "device": batch.device,
        "serial": record["serial"],
        "user_id": record["user_id"],
        "local_time": record["local_time"],
        "local_day": record["local_time"][:10],
        "utc_time": parse_time(record["utc_time"]),
        "state_code": record["state"]["code"],
        "state_name": record["state"]["name"],
        "verify_code": record["verify"]["code"],
        "verify_name": record["verify"]["name"],
        "work_code": record["work_code"],
        "source": record["source"],
        "historical": record["historical"],
        "flags": ",".join(record["flags"]),
        "record": record,
        "batch_seq": batch.seq,
        "received_at": now,
    }


def write(conn: Connection, items: Sequence[Item], now: dt.datetime) -> Written:
    """Write `items` in the caller's transaction (commit it, then confirm)."""
    written = Written()
    # The first batch that carries an id is the one its row names (a punch is stored once).
    punches: dict[str, tuple[PunchBatch, dict[str, Any]]] = {}
    for item in items:
        if isinstance(item, PunchBatch):
            ids = written.confirm.setdefault(item.base, [])
            for record in item.records:
                punches.setdefault(record["id"], (item, record))
                ids.append(record["id"])
    if punches:
        if conn.dialect.name == "postgresql":
            inserted = _insert_punches_by_copy(conn, list(punches.values()), now)
        else:
            rows = [punch_row(batch, record, now) for batch, record in punches.values()]
            statement = dialect_insert(conn, t.punches).on_conflict_do_nothing(index_elements=["id"])
            inserted = len(conn.execute(statement.returning(t.punches.c.id), rows).all())
        written.punches_new = inserted
        written.punches_repeated = sum(len(ids) for ids in written.confirm.values()) - inserted
    for item in items:
        if isinstance(item, DeviceState):
            upsert_device_state(conn, item, now)
        elif isinstance(item, GatewayState):
            upsert_gateway_state(conn, item, now)
        elif isinstance(item, Event):
            insert_event(conn, item, now)
        elif isinstance(item, Digests):
            replace_digests(conn, item, now)
            written.digests_changed = True
        elif isinstance(item, DeadLetter):
            conn.execute(
                t.dead_letters.insert(),
                {"topic": item.topic, "payload": item.payload, "reason": item.reason, "received_at": now},
            )
            written.dead_letters += 1
    return written


# PostgreSQL: the rows go in with COPY, straight into `punches` when none of them is stored
# yet, else into a session-local staging table, from which one INSERT ... SELECT ... ON
# CONFLICT DO NOTHING moves the new ones over (see `_insert_punches_by_copy`). A multi-row
# INSERT of the same rows spends most of its time in the driver composing a statement with tens
# of thousands of parameters (~1,200 rows/s here); this runs near COPY speed (docs/scale-out.md).
#
# The COPY rows are built straight from the records as tuples, in `_COPY_COLUMNS` order (the
# values `punch_row` gives, as PostgreSQL reads them in COPY's text format): the times go as
# the payload's ISO 8601 text, which PostgreSQL parses itself, rather than through datetime
# objects that psycopg would only format back (py-spy: dicts and time parsing were a fifth of
# the sink's writer). A test holds them equal to `punch_row`'s.
_STAGING = sa.Table("punches_in", sa.MetaData(), *(sa.Column(c.name, c.type) for c in t.punches.columns))
_COPY_COLUMNS = (
    "id", "gateway", "device", "serial", "user_id", "local_time", "local_day", "utc_time", "state_code",
    "state_name", "verify_code", "verify_name", "work_code", "source", "historical", "flags", "record",
    "batch_seq", "received_at",
)  # fmt: skip
assert sorted(_COPY_COLUMNS) == sorted(c.name for c in t.punches.columns), "a column of punches is missing"
_COPY_SQL = f"COPY punches_in ({', '.join(_COPY_COLUMNS)}) FROM STDIN"
_DIRECT_SQL = f"COPY punches ({', '.join(_COPY_COLUMNS)}) FROM STDIN"
# INSERT ... SELECT without RETURNING: its row count is what was new (no ids sent back).
_MOVE = (
    postgresql.insert(t.punches)
    .from_select(_COPY_COLUMNS, sa.select(*(_STAGING.c[c] for c in _COPY_COLUMNS)))
    .on_conflict_do_nothing(index_elements=["id"])
    .execution_options(preserve_rowcount=True)  # SQLAlchemy keeps an INSERT's count only when asked
)
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # JSONB re-renders it anyway


def copy_row(batch: PunchBatch, record: dict[str, Any], now: dt.datetime) -> tuple[Any, ...]:
    """One punch as COPY takes it, in `_COPY_COLUMNS` order."""
    local_time = record["local_time"]
    return (
        record["id"],
        batch.gateway,
        batch.device,
        record["serial"],
        record["user_id"],
        local_time,
        local_time[:10],
        record["utc_time"],
        record["state"]["code"],
        record["state"]["name"],
        record["verify"]["code"],
        record["verify"]["name"],
        record["work_code"],
        record["source"],
        record["historical"],
        ",".join(record["flags"]),
        _dumps(record),
        batch.seq,
        now,
    )


# `conn.info` (kept with the DB-API connection across transactions): the last flush on this
# connection held punches stored before, so the next one goes through the staging table at once.
_REPEATS_SEEN = "punchgate_sink_repeats_seen"


def _insert_punches_by_copy(
    conn: Connection, punches: list[tuple[PunchBatch, dict[str, Any]]], now: dt.datetime
) -> int:
    """Insert the punches not stored yet, in the caller's transaction; how many were new.

    Most flushes hold only new punches: they are copied straight into `punches` (what a bare
    COPY costs). A punch stored before makes that COPY fail on the primary key; it is then
    undone to its savepoint, and the flush goes through the staging table, which keeps only the
    new ones. After such a flush the next one on this connection starts with the staging table
    (re-sends come in runs), and the one after a flush without repeats tries the straight way
    again. Either way the same rows end up stored, each once."""
    driver = conn.connection.driver_connection  # psycopg's, in the same transaction
    assert driver is not None
    if not conn.info.get(_REPEATS_SEEN):
        try:
            with driver.cursor() as cursor:
                cursor.execute("SAVEPOINT punches_copy")
                try:
                    with cursor.copy(_DIRECT_SQL) as copy:
                        write_row = copy.write_row
                        for batch, record in punches:
                            write_row(copy_row(batch, record, now))
                except psycopg.errors.UniqueViolation:
                    cursor.execute("ROLLBACK TO SAVEPOINT punches_copy")
                else:
                    cursor.execute("RELEASE SAVEPOINT punches_copy")
                    return len(punches)
        except psycopg.Error as exc:  # as SQLAlchemy would raise it (DataError, OperationalError, ...)
            raise sa.exc.DBAPIError.instance(_DIRECT_SQL, None, exc, psycopg.Error) from exc
    inserted = _insert_punches_by_staging(driver, conn, punches, now)
    conn.info[_REPEATS_SEEN] = inserted < len(punches)
    return inserted


def _insert_punches_by_staging(
    driver: psycopg.Connection[Any],
    conn: Connection,
    punches: list[tuple[PunchBatch, dict[str, Any]]],
    now: dt.datetime,
) -> int:
    try:
        with driver.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS punches_in (LIKE punches) ON COMMIT DELETE ROWS")
            # Empty at the start of every transaction (its rows go at commit, or with a rollback);
            # this only guards a second flush in one transaction, and costs nothing on an empty
            # table (TRUNCATE would make a new file each time).
            cursor.execute("DELETE FROM punches_in")
            with cursor.copy(_COPY_SQL) as copy:
                write_row = copy.write_row
                for batch, record in punches:
                    write_row(copy_row(batch, record, now))
    except psycopg.Error as exc:  # as SQLAlchemy would raise it (DataError, OperationalError, ...)
        raise sa.exc.DBAPIError.instance(_COPY_SQL, None, exc, psycopg.Error) from exc
    return int(conn.execute(_MOVE).rowcount)
