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
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, PunchBatch):
            ids = written.confirm.setdefault(item.base, [])
            for record in item.records:
                rows.setdefault(record["id"], punch_row(item, record, now))
                ids.append(record["id"])
    if rows:
        if conn.dialect.name == "postgresql":
            inserted = _insert_punches_by_copy(conn, list(rows.values()))
        else:
            statement = dialect_insert(conn, t.punches).on_conflict_do_nothing(index_elements=["id"])
            inserted = len(conn.execute(statement.returning(t.punches.c.id), list(rows.values())).all())
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


# PostgreSQL: the rows go in with COPY into a session-local staging table, then one
# INSERT ... SELECT ... ON CONFLICT DO NOTHING moves the new ones over. A multi-row INSERT of
# the same rows spends most of its time in the driver composing a statement with tens of
# thousands of parameters (~1,200 rows/s here); this runs near COPY speed (docs/scale-out.md).
_STAGING = sa.Table("punches_in", sa.MetaData(), *(sa.Column(c.name, c.type) for c in t.punches.columns))
_COLUMNS = [c.name for c in t.punches.columns]


def _insert_punches_by_copy(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert the rows not stored yet, in the caller's transaction; how many were new."""
    driver = conn.connection.driver_connection  # psycopg's, in the same transaction
    assert driver is not None
    statement = f"COPY punches_in ({', '.join(_COLUMNS)}) FROM STDIN"
    try:
        with driver.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS punches_in (LIKE punches) ON COMMIT DELETE ROWS")
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row([json.dumps(row[c]) if c == "record" else row[c] for c in _COLUMNS])
    except psycopg.Error as exc:  # as SQLAlchemy would raise it (DataError, OperationalError, ...)
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    move = (
        postgresql.insert(t.punches)
        .from_select(_COLUMNS, sa.select(*(_STAGING.c[c] for c in _COLUMNS)))
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(t.punches.c.id)
    )
    inserted = len(conn.execute(move).all())
    conn.execute(_STAGING.delete())  # the next flush in this transaction (one-by-one) starts empty
    return inserted
