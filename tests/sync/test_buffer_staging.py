"""Staged punches (`sync/buffer_staging.py`): committed before their dedupe, moved into the
outbox later. Against real SQLite files: what is staged survives a reopen and a move that
never committed; a move stores, audits and counts exactly the new rows, in staging order; the
refusals are an insert's."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from punchgate.sync import buffer_insert
from punchgate.sync.audit_verify import verify
from punchgate.sync.store import BufferFullError, DiskLowError
from tests.support.factories import make_punches
from tests.sync.test_buffer_insert import audited_ids, open_store


def outbox_ids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [str(ident) for (ident,) in conn.execute("SELECT id FROM punches ORDER BY pk")]
    finally:
        conn.close()


def test_staged_punches_wait_outside_the_outbox_and_move_in_staging_order(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    first, second = make_punches("door-1", 30), make_punches("door-2", 20)
    assert store.add_or_stage(first, stage=True) is None
    assert store.add_or_stage(second, stage=True) is None

    assert store.staged_count() == 50
    assert store.staged_count("door-1") == 30
    assert store.punch_count() == 0
    assert store.pending_count() == 0

    moved = store.move_staged(10_000)

    assert moved.taken == {"door-1": 30, "door-2": 20}
    assert moved.inserted == {"door-1": [p.id for p in first], "door-2": [p.id for p in second]}
    assert store.staged_count() == 0
    assert store.pending_devices() == {"door-1": 30, "door-2": 20}
    assert store.recount_pending()
    assert store.identity.stored == 50
    store.close()
    assert outbox_ids(tmp_path / "buffer.db") == [p.id for p in first + second]
    assert audited_ids(tmp_path / "buffer.db") == [p.id for p in first + second]
    report = verify(tmp_path / "buffer.db")
    assert report.ok, report.lines()


def test_a_move_skips_punches_the_outbox_holds_or_that_were_staged_twice(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    punches = make_punches("door-1", 40)
    stored = punches[::4]
    assert store.add_punches(stored) == [p.id for p in stored]
    assert store.add_or_stage(punches[:25], stage=True) is None
    assert store.add_or_stage(punches[20:], stage=True) is None  # five of them again

    moved = store.move_staged(1_000)

    new = [p.id for p in punches if p not in stored]
    assert moved.total_taken == 45
    assert moved.inserted == {"door-1": new}
    assert store.punch_count() == 40
    assert store.pending_count() == 40
    assert store.recount_pending()
    store.close()
    assert outbox_ids(tmp_path / "buffer.db") == [p.id for p in stored] + new
    assert audited_ids(tmp_path / "buffer.db") == [p.id for p in stored] + new
    assert verify(tmp_path / "buffer.db").ok


def test_a_move_takes_the_oldest_rows_up_to_its_limit(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    punches = make_punches("door-1", 25)
    for start in range(0, 25, 5):
        store.add_or_stage(punches[start : start + 5], stage=True)

    assert store.move_staged(12).inserted == {"door-1": [p.id for p in punches[:12]]}
    assert store.staged_count() == 13
    assert store.move_staged(12).total_taken == 12
    assert store.move_staged(12).total_taken == 1
    assert store.move_staged(12).total_taken == 0
    store.close()
    assert outbox_ids(tmp_path / "buffer.db") == [p.id for p in punches]


def test_staged_punches_survive_a_reopen_and_are_counted_again(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.add_or_stage(make_punches("door-1", 7), stage=True)
    store.add_or_stage(make_punches("door-2", 3), stage=True)
    store.close()

    store = open_store(tmp_path)
    assert store.staged_count() == 10
    assert store.staged_count("door-2") == 3
    assert store.move_staged(100).total_taken == 10
    assert store.pending_count() == 10
    store.close()


def test_a_move_that_fails_before_its_commit_leaves_everything_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path)
    punches = make_punches("door-1", 20)
    store.add_or_stage(punches, stage=True)

    def broken(*_args: object) -> None:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(buffer_insert, "committing", broken)
    with pytest.raises(RuntimeError):
        store.move_staged(100)
    monkeypatch.undo()

    assert store.staged_count() == 20
    assert store.punch_count() == 0
    assert store.pending_count() == 0
    assert store.move_staged(100).inserted == {"door-1": [p.id for p in punches]}
    store.close()
    assert verify(tmp_path / "buffer.db").ok


def test_a_terminal_with_staged_punches_stages_its_next_ones_too_so_its_order_holds(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    backlog, live = make_punches("door-1", 30), make_punches("door-1", 31)[30:]
    other = make_punches("door-2", 1)
    store.add_or_stage(backlog, stage=True)

    assert store.add_or_stage(live, stage=False) is None  # behind its own backlog
    assert store.add_or_stage(other, stage=False) == [other[0].id]  # another terminal: straight in

    store.move_staged(100)
    store.close()
    assert outbox_ids(tmp_path / "buffer.db") == [other[0].id] + [p.id for p in backlog + live]


def test_staged_punches_take_room_under_max_pending_and_a_part_is_all_or_nothing(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_pending=50)
    store.add_or_stage(make_punches("door-1", 40), stage=True)

    with pytest.raises(BufferFullError):
        store.add_or_stage(make_punches("door-2", 20), stage=True)
    assert store.staged_count() == 40
    # An insert sees the staged rows as taken room too.
    with pytest.raises(BufferFullError) as refused:
        store.add_punches(make_punches("door-3", 20))
    assert len(refused.value.stored) == 10
    assert store.active_faults() == {"buffer_full"}
    store.close()


def test_nothing_is_staged_below_the_disk_minimum(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    store = open_store(tmp_path, min_free_disk_mb=free_mb + 1024)
    with pytest.raises(DiskLowError):
        store.add_or_stage(make_punches("door-1", 5), stage=True)
    assert store.staged_count() == 0
    store.close()
