"""The sink's database on SQLite and on a real PostgreSQL: the migrations build exactly the tables
the code names, writes are idempotent, states keep the newest, a flush the database refuses
sends only the bad message to the dead letters; the validation is the consumer schemas'."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from punchgate.sync.contract import SCHEMA_DIR, batch_json, day_digest, record_json
from punchgate.sync.sink import db, tables
from punchgate.sync.sink.consumer import Sink, SinkSettings, _Received
from punchgate.sync.sink.reconcile import gap_days, reopen_changed_counts
from punchgate.sync.sink.validate import consumer_schema
from tests.support.factories import make_punches

NOW = dt.datetime(2024, 3, 4, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "sink.db")
    return str(request.getfixturevalue("pg_url"))


def _records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [json.loads(record_json(p)) for p in make_punches("door-1", n, start=start)]


def test_the_migrations_build_exactly_the_tables_the_code_names(url: str) -> None:
    engine = db.create(url)
    try:
        db.upgrade(engine)
        db.upgrade(engine)  # again: nothing to do
        assert db.current_revision(engine) == "0001"
        inspector = sa.inspect(engine)
        for table in tables.metadata.sorted_tables:
            assert [c["name"] for c in inspector.get_columns(table.name)] == [c.name for c in table.columns]
        assert set(inspector.get_table_names()) == {*tables.metadata.tables, "alembic_version"}
    finally:
        engine.dispose()


def test_writes_are_idempotent_and_states_keep_the_newest(url: str) -> None:
    engine = db.create(url)
    db.upgrade(engine)
    records = _records(5)
    state = {"device": "door-1", "state": "online", "as_of": "2024-03-04T07:10:00Z"}
    older = {**state, "state": "offline", "as_of": "2024-03-04T07:00:00Z"}
    event = {"device": "door-1", "event": "fault_raised", "code": "silent", "severity": "info", "detail": "", "time": "2024-03-04T07:10:00Z"}  # fmt: skip
    items: list[db.Item] = [
        db.PunchBatch("punchgate/gw", "gw", "door-1", 1, records),
        db.PunchBatch("punchgate/gw", "gw", "door-1", 2, records[:2]),  # a re-send inside the flush
        db.DeviceState("gw", "door-1", state),
        db.DeviceState("gw", "door-1", older),  # arrives later, is older: ignored
        db.Event("gw", event),
        db.Event("gw", event),
    ]
    try:
        with engine.begin() as conn:
            first = db.write(conn, items, NOW)
        with engine.begin() as conn:
            again = db.write(conn, items, NOW)
            assert db.counts(conn) == {
                "punches": 5, "events": 1, "device_states": 1, "gateway_states": 0, "digests": 0, "dead_letters": 0,
            }  # fmt: skip
            assert conn.execute(sa.select(tables.device_states.c.state)).scalar_one() == "online"
        assert (first.punches_new, first.punches_repeated) == (5, 2)
        assert (again.punches_new, again.punches_repeated) == (0, 7)
        assert first.confirm == {"punchgate/gw": [r["id"] for r in records] + [r["id"] for r in records[:2]]}
    finally:
        engine.dispose()


def test_a_refused_flush_dead_letters_only_the_message_the_database_refuses(pg_url: str) -> None:
    sink = Sink(SinkSettings(db=pg_url))
    db.upgrade(sink.engine)
    good = _records(3)
    huge = dict(_records(1, start=3)[0], work_code=2**70)  # valid JSON Schema, too big for BIGINT
    topic = "punchgate/gw/devices/door-1/punches"

    def message(records: list[dict[str, Any]], seq: int) -> _Received:
        payload = batch_json(gateway="gw", device="door-1", seq=seq, records=[json.dumps(r) for r in records])
        return _Received(topic, payload, mid=seq, qos=1, epoch=0)

    try:
        written = sink._commit([message(good, 1), message([huge], 2)])
        assert written is not None
        assert written.punches_new == 3 and written.dead_letters == 1
        assert written.confirm == {"punchgate/gw": [r["id"] for r in good]}
        with sink.engine.connect() as conn:
            reason = conn.execute(sa.select(tables.dead_letters.c.reason)).scalar_one()
        assert reason.startswith("refused by the database")
    finally:
        sink.engine.dispose()


def test_bad_payloads_become_dead_letters_with_the_reason(tmp_path: Path) -> None:
    sink = Sink(SinkSettings(db=str(tmp_path / "sink.db")))
    batch = batch_json(
        gateway="gw", device="door-1", seq=1, records=[record_json(p) for p in make_punches("door-1", 2)]
    )
    cases = {
        ("punchgate/gw/devices/door-1/punches", b"{oops"): "not JSON",
        ("punchgate/gw/devices/door-1/punches", batch.replace(b'"seq":1', b'"seq":0')): "punch-batch: seq",
        ("punchgate/gw/devices/door-2/punches", batch): "the topic names gw/door-2",
        ("punchgate/gw/devices/door-1/whatever", batch): "not a topic",
    }
    for (topic, payload), reason in cases.items():
        item = sink.classify(topic, payload)
        assert isinstance(item, db.DeadLetter) and item.reason.startswith(reason), (reason, item)
    assert isinstance(sink.classify("punchgate/gw/devices/door-1/punches", batch), db.PunchBatch)
    assert sink.classify("punchgate/gw/devices/door-1/state", b"") is None  # a retained message cleared
    sink.engine.dispose()


def _without_known_names(node: Any) -> Any:
    """A schema with the enum lists of the open vocabularies emptied ("known in this release"):
    they document, and the alternative beside them accepts any string anyway."""
    if isinstance(node, dict):
        if node.get("description") == "known in this release":
            return {**node, "enum": []}
        return {key: _without_known_names(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_without_known_names(value) for value in node]
    return node


@pytest.mark.parametrize(
    "name", ["punch-batch", "device-state", "device-event", "gateway-state", "device-digests"]
)
def test_the_sink_validates_with_the_consumer_schemas(name: str) -> None:
    checked_in = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    assert _without_known_names(consumer_schema(name)) == _without_known_names(checked_in)


def test_a_matching_day_that_lost_rows_is_reopened_and_then_found_missing(url: str) -> None:
    engine = db.create(url)
    db.upgrade(engine)
    records = _records(6)
    by_day: dict[str, list[str]] = {}
    for record in records:
        by_day.setdefault(record["local_time"][:10], []).append(record["id"])
    days = sorted(by_day)
    digests = {
        "schema": "punchgate.digests", "version": 1, "scheme": 1, "gateway": "gw", "device": "door-1",
        "as_of": "2024-03-04T07:10:00Z", "first_day": days[0], "last_day": days[-1],
        "days": [{"day": d, "count": len(ids), "digest": day_digest(ids)} for d, ids in by_day.items()],
    }  # fmt: skip
    later = NOW + dt.timedelta(hours=1)
    try:
        with engine.begin() as conn:
            db.write(
                conn,
                [db.PunchBatch("punchgate/gw", "gw", "door-1", 1, records), db.Digests("gw", digests)],
                NOW,
            )
            assert all(c.ok for c in db.recheck(conn, NOW))
            assert reopen_changed_counts(conn) == 0  # nothing changed: nothing to look at again
            lost = by_day[days[0]][0]
            conn.execute(tables.punches.delete().where(tables.punches.c.id == lost))
            assert db.recheck(conn, NOW) == []  # a day known to match is not compared again ...
            assert reopen_changed_counts(conn) == 1  # ... until its count is found changed
            (check,) = db.recheck(conn, NOW)
            assert (check.day, check.status, check.gateway_count - check.central_count) == (
                days[0],
                "missing",
                1,
            )
            (gap,) = gap_days(conn, older_than=later)
            assert (gap.gateway, gap.device, gap.day, gap.status) == ("gw", "door-1", days[0], "missing")
            assert gap_days(conn, older_than=NOW - dt.timedelta(seconds=1)) == []  # still within the grace
    finally:
        engine.dispose()
