"""Punches in (`sync/buffer_insert.py`): the insert that lets the unique index skip known ids
stores, audits and counts exactly the rows it inserted, whichever way the known ids were found."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from punchgate.sync import audit
from punchgate.sync.audit_verify import verify
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import BufferFullError, DiskLowError, Store
from tests.support.factories import make_punches


def open_store(tmp_path: Path, **options: object) -> Store:
    settings = BufferSettings.model_validate(
        {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, **options}
    )
    return Store.open(settings)


def audited_ids(path: Path) -> list[str]:
    """Every record id the chain's `punches` entries cover, in order."""
    conn = sqlite3.connect(path)
    try:
        entries = conn.execute("SELECT entry FROM audit WHERE kind = 'punches' ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [ident for (entry,) in entries for ident, _digest in audit.entry_pairs(json.loads(entry))]


def test_known_ids_scattered_through_a_call_are_skipped_and_the_rest_stored_in_order(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    every = make_punches("door-1", 40) + make_punches("door-2", 20)
    known = every[::3]  # every third one stored before, both terminals
    assert store.add_punches(known) == [p.id for p in known]
    offered = [*every, every[5], every[0]]  # and two repeated inside the call
    new = [p for p in every if p not in known]

    assert store.add_punches(offered) == [p.id for p in new]

    assert store.punch_count() == 60
    assert store.pending_devices() == {"door-1": 40, "door-2": 20}
    assert store.recount_pending()  # the counts kept agree with the table
    assert store.identity.stored == 60
    store.close()
    # The chain covers each row once: the first commit's, then exactly the new rows in order.
    assert audited_ids(tmp_path / "buffer.db") == [p.id for p in known] + [p.id for p in new]
    report = verify(tmp_path / "buffer.db")
    assert report.ok, report.lines()


def test_a_call_of_known_punches_only_changes_nothing(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    punches = make_punches("door-1", 30)
    store.add_punches(punches)
    head = store.audit_head()

    assert store.add_punches(list(reversed(punches))) == []

    assert store.audit_head() == head  # no entry appended for nothing stored
    assert store.punch_count() == 30
    assert store.pending_count() == 30
    assert store.identity.stored == 30
    store.close()


def test_below_the_disk_minimum_known_punches_are_still_a_no_op(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    punches = make_punches("door-1", 10)
    store.add_punches(punches)
    store.close()
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    low = open_store(tmp_path, min_free_disk_mb=free_mb + 10_000)

    assert low.add_punches(punches) == []  # nothing new: nothing refused
    with pytest.raises(DiskLowError):
        low.add_punches(make_punches("door-1", 11))  # one new among them
    assert low.punch_count() == 10
    low.close()


def test_near_the_limit_only_new_punches_count_against_the_room_left(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_pending=12)
    first = make_punches("door-1", 10)
    store.add_punches(first)
    offered = make_punches("door-1", 15)  # 10 known, 5 new, room for 2

    with pytest.raises(BufferFullError) as refused:
        store.add_punches(offered)

    assert refused.value.stored == [p.id for p in offered[10:12]]
    assert store.punch_count() == 12
    assert store.pending_count() == 12
    assert store.recount_pending()
    store.close()
    assert verify(tmp_path / "buffer.db").ok
