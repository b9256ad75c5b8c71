"""The durable buffer on a real SQLite file."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from punchgate.sync import migrations
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import BufferFullError, DiskLowError, Store, StoreError, StoreRefusedError
from tests.support.factories import make_punch, make_punches


def open_store(tmp_path: Path, **options: object) -> Store:
    settings = BufferSettings.model_validate(
        {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, **options}
    )
    return Store.open(settings)


def test_known_ids_are_a_no_op_and_only_new_ids_are_returned(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    first = make_punches("door-1", 10)
    assert store.add_punches(first) == [p.id for p in first]
    again = make_punches("door-1", 15)  # 10 known + 5 new, and one repeated inside the call
    assert store.add_punches([*again, again[-1]]) == [p.id for p in again[10:]]
    assert store.pending_count() == 15
    assert store.punch_count() == 15
    assert store.known_ids([first[0].id, "nope"]) == {first[0].id}
    store.close()


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.add_punches(make_punches("d", 3))
    with store._engine.connect() as conn:  # the pragmas every pooled connection runs with
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


def test_committed_punches_survive_reopen_and_other_connections_see_them(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    punches = make_punches("door-1", 2500)  # thousands in one transaction
    store.add_punches(punches)
    # A separate plain sqlite3 connection (another process would see the same) reads them.
    raw = sqlite3.connect(tmp_path / "buffer.db")
    assert raw.execute("SELECT count(*) FROM punches WHERE delivered_at IS NULL").fetchone()[0] == 2500
    raw.close()
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.pending_count() == 2500
    assert reopened.add_punches(punches) == []
    reopened.close()


def test_pending_oldest_first_and_mark_exactly_those_rows(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    punches = [make_punch(d, n) for n in range(5) for d in ("a", "b")]
    store.add_punches(punches)
    rows = store.pending_batch(4)
    assert [r.payload for r in rows] == [store.pending_batch(10)[i].payload for i in range(4)]
    assert [r.device for r in rows] == ["a", "b", "a", "b"]
    assert store.mark_delivered([rows[0].pk, rows[2].pk]) == 2
    assert store.mark_delivered([rows[0].pk]) == 0  # already delivered: not counted twice
    assert store.pending_count() == 8
    assert store.pending_count("a") == 3
    assert store.pending_devices() == {"a": 3, "b": 5}
    assert [r.pk for r in store.pending_batch(3)] == [rows[1].pk, rows[3].pk, rows[3].pk + 1]
    assert [r.pk for r in store.pending_batch(2, after=rows[3].pk)] == [rows[3].pk + 1, rows[3].pk + 2]
    store.close()


def test_oldest_pending_age(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.oldest_pending_age() is None
    store.add_punches([make_punch("a", 1)])
    time.sleep(0.05)
    age = store.oldest_pending_age()
    assert age is not None and age >= 0.05
    store.mark_delivered([r.pk for r in store.pending_batch(10)])
    assert store.oldest_pending_age() is None
    store.close()


def test_purge_removes_only_old_delivered_punches(tmp_path: Path) -> None:
    store = open_store(tmp_path, retention_days=30)
    store.add_punches(make_punches("a", 6))
    rows = store.pending_batch(10)
    store.mark_delivered([r.pk for r in rows[:4]])
    # Age two of the delivered ones beyond the retention window.
    with store._writer.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE punches SET delivered_at = {time.time() - 31 * 86400} WHERE pk IN ({rows[0].pk}, {rows[1].pk})"
        )
    assert store.purge_delivered() == 2
    assert store.punch_count() == 4
    assert store.pending_count() == 2  # undelivered punches are never purged, however old
    assert store.purge_delivered(older_than_days=0) == 2
    assert store.punch_count() == 2
    store.close()


def test_buffer_full_refuses_new_punches_keeps_stored_and_recovers(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_pending=100)
    store.add_punches(make_punches("a", 100))
    assert store.active_faults() == frozenset()
    with pytest.raises(BufferFullError) as refused:
        store.add_punches(make_punches("a", 5, start=100))
    assert refused.value.fault == "buffer_full"
    assert isinstance(refused.value, StoreRefusedError)
    assert "100 undelivered punches, limit is 100" in str(refused.value)
    assert store.active_faults() == {"buffer_full"}
    # Refused means nothing from the call was stored; what was stored is all still there.
    assert store.pending_count() == 100 and store.punch_count() == 100
    # Known ids are still a harmless no-op while full.
    assert store.add_punches(make_punches("a", 3)) == []
    # Draining a little is not enough (no flapping) ...
    store.mark_delivered([r.pk for r in store.pending_batch(5)])
    with pytest.raises(BufferFullError):
        store.add_punches(make_punches("a", 1, start=100))
    # ... draining below the resume mark is.
    store.mark_delivered([r.pk for r in store.pending_batch(10)])
    assert store.active_faults() == frozenset()
    assert store.add_punches(make_punches("a", 5, start=100)) != []
    assert store.punch_count() == 105
    store.close()


def test_disk_low_refuses_new_punches(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    store = open_store(tmp_path, min_free_disk_mb=free_mb + 10_000)
    with pytest.raises(DiskLowError) as refused:
        store.add_punches(make_punches("a", 2))
    assert refused.value.fault == "disk_low"
    assert "minimum is" in str(refused.value)
    assert store.active_faults() == {"disk_low"}
    assert store.punch_count() == 0
    store.close()


def test_device_meta_round_trip(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.get_device_meta("door-1") == {}
    store.set_device_meta("door-1", {"serial_number": "SN1", "record_count": 12})
    store.set_device_meta("door-1", {"serial_number": "SN1", "record_count": 13})
    assert store.get_device_meta("door-1") == {"serial_number": "SN1", "record_count": 13}
    store.close()
    assert open_store(tmp_path).get_device_meta("door-1")["record_count"] == 13


def test_batch_seq_increases_and_never_repeats_after_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert [store.next_batch_seq("a") for _ in range(3)] == [1, 2, 3]
    assert store.next_batch_seq("b") == 1
    store.close()  # a crash here must not let seq 1..3 be handed out again
    reopened = open_store(tmp_path)
    assert reopened.next_batch_seq("a") > 3
    reopened.close()


def test_concurrent_writers_from_threads(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    errors: list[BaseException] = []

    def add(device: str) -> None:
        try:
            for start in range(0, 1000, 100):
                store.add_punches(make_punches(device, 100, start=start))
                store.mark_delivered([r.pk for r in store.pending_batch(50)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"d{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.punch_count() == 4000
    assert store.pending_count() == 4000 - len(store.delivered_ids())
    store.close()


def test_migration_runs_in_order_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with store._engine.connect() as conn:
        assert migrations.current_version(conn) == migrations.LATEST_VERSION
    store.close()
    raw = sqlite3.connect(tmp_path / "buffer.db")
    raw.execute(f"PRAGMA user_version = {migrations.LATEST_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="upgrade punchgate"):
        open_store(tmp_path)


def test_a_later_migration_step_upgrades_an_existing_file(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    latest = migrations.LATEST_VERSION
    with engine.begin() as conn:
        assert migrations.migrate(conn) == (0, latest)
        conn.exec_driver_sql("INSERT INTO device_meta VALUES ('a', '{}', 0)")

    def later(conn: object) -> None:
        conn.exec_driver_sql("ALTER TABLE device_meta ADD COLUMN note TEXT DEFAULT 'x'")  # type: ignore[attr-defined]

    with engine.begin() as conn:
        assert migrations.migrate(conn, [*migrations.STEPS, later]) == (latest, latest + 1)
        assert conn.exec_driver_sql("SELECT note FROM device_meta").scalar() == "x"
    engine.dispose()


def test_a_batch_larger_than_the_room_left_fills_the_buffer_to_its_limit(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_pending=100)
    store.add_punches(make_punches("a", 60))
    batch = make_punches("b", 70)
    with pytest.raises(BufferFullError) as refused:
        store.add_punches(batch)
    # The oldest 40 fit and are stored (and named); the newest 30 stay on the terminal.
    assert refused.value.stored == [p.id for p in batch[:40]]
    assert store.pending_count() == 100 and store.active_faults() == {"buffer_full"}
    store.mark_delivered([r.pk for r in store.pending_batch(50)])
    assert store.add_punches(batch) == [p.id for p in batch[40:]]
    store.close()
