"""The sink's PostgreSQL write path builds its COPY rows straight from the records (times as the
payload's text, the record as compact JSON); on a real PostgreSQL, the rows it stores are the
rows `punch_row` describes, inserted through SQLAlchemy, column for column."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from punchgate.sync.contract import record_json
from punchgate.sync.sink import db, tables
from tests.support.factories import make_punches

NOW = dt.datetime(2024, 3, 4, 12, 0, 0, 123456, tzinfo=dt.UTC)


def _records() -> list[dict[str, Any]]:
    records = [json.loads(record_json(p)) for p in make_punches("door-1", 4)]
    # What a payload may carry: fractions of a second, names unknown (null), several flags,
    # text beyond ASCII and characters COPY's text format must escape.
    records[0]["utc_time"] = records[0]["utc_time"].replace("Z", ".250Z")
    records[1]["state"]["name"] = None
    records[1]["flags"] = ["dst_fold", "clock_suspect"]
    records[2]["user_id"] = "Zoë\\tab\t1"
    records[3]["serial"] = "SN\n\\N"
    return records


def _stored(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {row["id"]: dict(row) for row in conn.execute(sa.select(tables.punches)).mappings()}


def test_copy_rows_store_what_punch_row_describes(postgres_server: Any) -> None:
    records = _records()
    batch = db.PunchBatch("punchgate/gw", "gw", "door-1", 7, records)
    by_copy = db.create(postgres_server.create_database("flush_by_copy"))
    by_insert = db.create(postgres_server.create_database("flush_by_insert"))
    try:
        for engine in (by_copy, by_insert):
            db.upgrade(engine)
        with by_copy.begin() as conn:
            written = db.write(conn, [batch, batch], NOW)  # the second: a re-send in the flush
        assert (written.punches_new, written.punches_repeated) == (4, 4)
        with by_insert.begin() as conn:
            conn.execute(tables.punches.insert(), [db.punch_row(batch, r, NOW) for r in records])
        copied, inserted = _stored(by_copy), _stored(by_insert)
        assert copied == inserted
        assert copied[records[2]["id"]]["user_id"] == "Zoë\\tab\t1"
        assert copied[records[0]["id"]]["utc_time"] == dt.datetime.fromisoformat(records[0]["utc_time"])
        assert copied[records[0]["id"]]["record"] == records[0]
        # Stored once: the same flush again inserts nothing and counts every punch a repeat
        # (the straight COPY fails on the key and is undone; the staging table keeps none).
        with by_copy.begin() as conn:
            again = db.write(conn, [batch], NOW)
        assert (again.punches_new, again.punches_repeated) == (0, 4)
        # New punches behind stored ones, then new ones alone, then a repeat once more: each
        # flush stores exactly its new punches, whichever way it took.
        more = [json.loads(record_json(p)) for p in make_punches("door-1", 6, start=4)]
        flushes = [
            ([*records[:2], *more[:2]], (2, 2)),
            (more[2:4], (2, 0)),
            (more[4:5], (1, 0)),
            ([more[5], records[3]], (1, 1)),
        ]
        for n, (flush, expected) in enumerate(flushes):
            with by_copy.begin() as conn:
                done = db.write(conn, [db.PunchBatch("punchgate/gw", "gw", "door-1", 8 + n, flush)], NOW)
            assert (done.punches_new, done.punches_repeated) == expected, n
        stored = _stored(by_copy)
        assert set(stored) == {r["id"] for r in [*records, *more]}
        assert {stored[r["id"]]["batch_seq"] for r in more} == {8, 9, 10, 11}
    finally:
        by_copy.dispose()
        by_insert.dispose()
