"""A buffer file written by the released store (schema v1) upgrades without losing anything.

The v1 file is built the way a site's file was: schema from migration step 1 only (frozen SQL),
rows inserted, marked delivered, purged, batch sequence blocks reserved and device meta set
with the exact statements the released `sync/store.py` ran (as of commit 5f4c207, copied
below so this test does not depend on git history). Then the current `Store` opens it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event

from punchgate.sync import migrations
from punchgate.sync.buffer_file import begin, configure_connection
from punchgate.sync.contract import record_json
from punchgate.sync.records import FLAG_DST_FOLD, FLAG_IN_FUTURE, Punch, Source
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store, StoreError
from tests.support.factories import make_punch

# --- the released store's statements (v1 schema), verbatim -----------------------------------
_V1_INSERT_COLUMNS = (
    "id, device, device_serial, user_id, local_time, utc_time, utc_offset_seconds, state, state_name, "
    "verify, verify_name, work_code, source, historical, flags, raw, payload, stored_at"
)
_V1_INSERT_SQL = f"INSERT INTO punches ({_V1_INSERT_COLUMNS}) VALUES ({', '.join('?' * 18)})"
_V1_MARK_SQL = "UPDATE punches SET delivered_at = ? WHERE delivered_at IS NULL AND pk IN ({marks})"
_V1_PURGE_SQL = "DELETE FROM punches WHERE delivered_at IS NOT NULL AND delivered_at < ?"
_V1_SEQ_SQL = "INSERT INTO batch_seq (device, reserved_until) VALUES (?, ?)"
_V1_META_SQL = (
    "INSERT INTO device_meta (device, data, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (device) DO UPDATE SET data = ?, updated_at = ?"
)

V1_COLUMNS = [c.strip() for c in _V1_INSERT_COLUMNS.split(",")]
KEPT = ["pk", "id", "device", "user_id", "utc_time", "source", "payload", "raw", "stored_at", "delivered_at"]
DROPPED = [
    "device_serial",
    "local_time",
    "utc_offset_seconds",
    "state",
    "state_name",
    "verify",
    "verify_name",
    "work_code",
    "historical",
    "flags",
]
DEVICES = ["door-1", "Tür Süd", "gate-3"]  # one name not ASCII: payload and device are TEXT
PER_DEVICE = 1200


def _v1_row(punch: Punch, now: float) -> tuple[Any, ...]:
    return (
        punch.id,
        punch.device,
        punch.device_serial,
        punch.user_id,
        punch.local_time.isoformat(),
        punch.utc_time.isoformat(),
        punch.utc_offset_seconds,
        punch.state,
        punch.state_name,
        punch.verify,
        punch.verify_name,
        punch.work_code,
        punch.source,
        int(punch.historical),
        ",".join(punch.flags),
        punch.raw,
        record_json(punch),
        now,
    )


def _released_engine(path: Path) -> Engine:
    """An engine configured as the released store configured it (WAL, FULL, explicit BEGIN)."""
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", configure_connection)
    event.listen(engine, "begin", begin)
    return engine.execution_options(write=True)


def _varied(n: int, device: str) -> Punch:
    """Punches with every kind of value the v1 columns held: sources, flags, unknown names."""
    sources: tuple[Source, ...] = ("poll", "poll", "live", "manual")
    punch = make_punch(device, n, source=sources[n % 4])
    if n % 7 == 0:
        punch = dataclasses.replace(punch, state_name=None, verify_name=None)
    if n % 11 == 0:
        punch = dataclasses.replace(punch, flags=(FLAG_DST_FOLD, FLAG_IN_FUTURE), raw=b"\x00\xff" * 20)
    return punch


def build_v1_file(path: Path) -> None:
    """A v1 buffer with pending and delivered punches, a purge gap, seq blocks and device meta."""
    engine = _released_engine(path)
    with engine.begin() as conn:
        assert migrations.migrate(conn, migrations.STEPS[:1]) == (0, 1)
    now = time.time()
    punches = [_varied(n, device) for n in range(PER_DEVICE) for device in DEVICES]
    with engine.begin() as conn:
        for start in range(0, len(punches), 500):  # one commit per terminal read, as the worker did
            rows = [_v1_row(p, now - 7200 + start) for p in punches[start : start + 500]]
            conn.exec_driver_sql(_V1_INSERT_SQL, rows)
    # Deliver about two thirds, in windows with their own PUBACK times; the rest stays pending.
    with engine.begin() as conn:
        pks = [pk for (pk,) in conn.exec_driver_sql("SELECT pk FROM punches ORDER BY pk")]
    delivered = [pk for pk in pks if pk % 3 != 0]
    for window, start in enumerate(range(0, len(delivered), 400)):
        part = delivered[start : start + 400]
        with engine.begin() as conn:
            sql = _V1_MARK_SQL.format(marks=",".join("?" * len(part)))
            conn.exec_driver_sql(sql, (now - 3600 + 60 * window, *part))
    # A purge of the oldest delivered rows leaves a gap in the pks.
    with engine.begin() as conn:
        assert conn.exec_driver_sql(_V1_PURGE_SQL, (now - 3600 + 60,)).rowcount > 0
        conn.exec_driver_sql(_V1_SEQ_SQL, ("door-1", 1000))
        conn.exec_driver_sql(_V1_SEQ_SQL, ("gate-3", 3000))
        for device in DEVICES[:2]:
            data = json.dumps({"serial_number": f"SN-{device}", "record_count": 17}, sort_keys=True)
            conn.exec_driver_sql(_V1_META_SQL, (device, data, now, data, now))
    engine.dispose()


def _snapshot(path: Path, columns: list[str] = KEPT) -> dict[str, Any]:
    """The file as plain SQLite sees it; `punches` holds `columns` of every row in pk order."""
    with sqlite3.connect(path) as db:
        return {
            "version": db.execute("PRAGMA user_version").fetchone()[0],
            "punch_columns": [row[1] for row in db.execute("PRAGMA table_info(punches)")],
            "punches": db.execute(f"SELECT {', '.join(columns)} FROM punches ORDER BY pk").fetchall(),
            "batch_seq": db.execute("SELECT * FROM batch_seq ORDER BY device").fetchall(),
            "device_meta": db.execute("SELECT * FROM device_meta ORDER BY device").fetchall(),
            "schema": db.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall(),
        }


@pytest.fixture
def v1_file(tmp_path: Path) -> Path:
    path = tmp_path / "v1" / "buffer.db"
    path.parent.mkdir()
    build_v1_file(path)
    return path


def _open(path: Path) -> Store:
    return Store.open(BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}))


def test_the_v1_fixture_is_what_the_released_store_left(v1_file: Path) -> None:
    old = _snapshot(v1_file)
    assert old["version"] == 1
    assert old["punch_columns"] == ["pk", *V1_COLUMNS, "delivered_at"]
    rows = old["punches"]
    pending = [r for r in rows if r[-1] is None]
    assert len(rows) > 3000 and 1000 < len(pending) < len(rows)
    assert rows[-1][0] > len(rows)  # purged rows left a gap in the pks


def test_a_v1_file_upgrades_keeping_every_row_payload_state_and_sequence(
    v1_file: Path, tmp_path: Path
) -> None:
    old = _snapshot(v1_file)
    old_rows = old["punches"]
    old_pending = [r for r in old_rows if r[-1] is None]
    old_delivered = [r for r in old_rows if r[-1] is not None]

    store = _open(v1_file)
    try:
        new = _snapshot(v1_file)
        assert new["version"] == migrations.LATEST_VERSION
        # v2 kept these; v5 added sent_at (central delivery), NULL for every row: nothing was sent unconfirmed.
        assert new["punch_columns"] == [*KEPT, "sent_at"]
        assert _snapshot(v1_file, ["count(sent_at)"])["punches"] == [(0,)]
        # Every row, column for column: pk (drain order), id, payload, stored_at, delivered_at.
        assert new["punches"] == old_rows
        assert new["batch_seq"] == old["batch_seq"]
        assert new["device_meta"] == old["device_meta"]

        # The store sees the same buffer through its API.
        assert store.punch_count() == len(old_rows)
        assert store.pending_count() == len(old_pending)
        assert store.pending_devices() == {
            d: sum(1 for r in old_pending if r[2] == d) for d in {r[2] for r in old_pending}
        }
        batch = store.pending_batch(len(old_rows))
        assert [(r.pk, r.device, r.source, r.payload) for r in batch] == [
            (r[0], r[2], r[5], r[6]) for r in old_pending
        ]
        assert store.delivered_ids() == {r[1] for r in old_delivered}
        age = store.oldest_pending_age()
        assert age is not None and age >= 3600

        # Batch numbers continue past every block the old store reserved; never repeat.
        assert store.next_batch_seq("door-1") == 1001
        assert store.next_batch_seq("gate-3") == 3001
        assert store.next_batch_seq("Tür Süd") == 1
        assert store.get_device_meta("Tür Süd") == {"serial_number": "SN-Tür Süd", "record_count": 17}

        # Dedupe still holds: re-reading what the file holds stores nothing new.
        held = {r[1] for r in old_rows}
        again = [p for n in range(PER_DEVICE) for d in DEVICES if (p := _varied(n, d)).id in held]
        assert len(again) == len(old_rows)
        assert store.add_punches(again) == []
        assert store.known_ids(held) == held

        # Replay by delivery time and delivery marks work on the migrated rows.
        since = max(r[-1] for r in old_delivered) - 60
        window = sum(1 for r in old_delivered if r[-1] >= since)
        assert store.requeue_delivered(since=since) == window > 0
        assert store.pending_count() == len(old_pending) + window
        assert store.mark_delivered([r.pk for r in store.pending_batch(100)]) == 100
    finally:
        store.close()

    # The upgraded file is the same schema a new site gets (tables, indexes, their SQL).
    fresh = tmp_path / "fresh" / "buffer.db"
    _open(fresh).close()
    assert _snapshot(v1_file)["schema"] == _snapshot(fresh)["schema"]
    with sqlite3.connect(v1_file) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_an_empty_v1_file_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    engine = _released_engine(path)
    with engine.begin() as conn:
        migrations.migrate(conn, migrations.STEPS[:1])
    engine.dispose()
    store = _open(path)
    assert store.punch_count() == 0
    store.close()
    assert _snapshot(path)["version"] == migrations.LATEST_VERSION


@pytest.fixture
def failing_last_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def boom(conn: Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk pulled mid-upgrade")

    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, boom])
    yield


@pytest.mark.usefixtures("failing_last_step")
def test_a_failed_upgrade_leaves_the_v1_file_untouched(v1_file: Path) -> None:
    every_column = ["pk", *V1_COLUMNS, "delivered_at"]
    before = _snapshot(v1_file, every_column)
    with pytest.raises(StoreError, match="disk pulled mid-upgrade"):
        _open(v1_file)
    after = _snapshot(v1_file, every_column)
    # v2 ran in the same transaction as the failing step: all of it was rolled back.
    assert after == before
    assert after["version"] == 1 and set(DROPPED) <= set(after["punch_columns"])
