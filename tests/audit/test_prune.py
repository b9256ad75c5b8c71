"""Retention purges prune the audit chain through a signed-off checkpoint, against real SQLite
files: the pruned chain verifies (and a head published before the purge still matches), an
entry edited after the checkpoint is named, and tampering with the checkpoint or the anchor is
found; the gateway's own code cannot cut the chain without one (migration v7's triggers)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from punchgate.sync import audit, audit_prune, buffer_chain
from punchgate.sync.audit_verify import verify
from punchgate.sync.buffer_identity import now_text
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.audit.tampering import tampered
from tests.support.factories import make_punches
from tests.support.waiting import wait_until


def _head(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as db:
        head = audit.head(db)
    assert head is not None
    return {**head.as_dict(), "gateway": "gw"}


def _unix(at: str) -> float:
    return dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _pruned_buffer(tmp_path: Path) -> tuple[Path, dict[str, object], str]:
    """A buffer whose old part (300 punches, 200 of them delivered, a config entry) is pruned
    after a newer part (50 punches) was appended; returns (path, the head published just before
    the purge, the id of a still-held old punch)."""
    path = tmp_path / "buffer.db"
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        for start in range(0, 300, 100):
            store.add_punches(make_punches("door-1", 100, start=start))
        store.audit_action("config_loaded", {"digest": "x", "changed": []})
        store.mark_delivered([row.pk for row in store.pending_batch(200)])
        old = store.audit_head()
        assert old is not None
        # The newer part gets a later `at` than every old entry (ms resolution): the cut goes between.
        wait_until(lambda: now_text() > old.at, timeout=5, message="the clock moves on")
        newer = store.add_punches(make_punches("door-2", 50))
        assert newer
        before = _head(path)
        first_new = store.audit_head()
        assert first_new is not None and first_new.seq == old.seq + 1
        # Delivered "more than 0 days" before the first new entry: the old part goes.
        assert buffer_chain.purge_delivered(store, 0, now=_unix(first_new.at)) == 200
        with sqlite3.connect(path) as db:
            (held,) = db.execute(
                "SELECT id FROM punches WHERE device = 'door-1' ORDER BY pk LIMIT 1"
            ).fetchone()
        assert store.last_audit_entry("config_loaded") == {  # carried by the checkpoint
            "at": old.at,
            "changed": [],
            "digest": "x",
            "kind": "config_loaded",
            "seq": old.seq,
        }
    finally:
        store.close()
    return path, before, str(held)


def _entries(path: Path) -> list[tuple[int, str, dict[str, object]]]:
    with sqlite3.connect(path) as db:
        return [
            (s, k, json.loads(e)) for s, k, e in db.execute("SELECT seq, kind, entry FROM audit ORDER BY seq")
        ]


def test_a_pruned_chain_verifies_from_its_checkpoint(tmp_path: Path) -> None:
    path, before, _held = _pruned_buffer(tmp_path)
    entries = _entries(path)
    # Old part: chain_started #1, punches #2-#4, config #5. Kept: punches #6. Then the purge.
    assert [(s, k) for s, k, _ in entries] == [
        (6, "punches"),
        (7, "purge"),
        (8, "checkpoint"),
        (9, "carried"),
    ]
    checkpoint = entries[2][2]
    assert checkpoint["pruned_from"] == 1 and checkpoint["pruned_through"] == 5
    assert checkpoint["entries_pruned"] == 5 and checkpoint["punches_carried"] == 100
    assert checkpoint["by"] == {"job": "retention", "retention_days": 0, "gateway": "gw"}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT seq FROM audit_anchor").fetchone() == (5,)
    report = verify(path, _head(path))
    assert report.ok, report.lines()
    assert report.first_seq == 6 and report.punches_checked == 150
    # The head central got before the purge (#6) is still in the chain, with its hash.
    report = verify(path, before)
    assert report.ok and "matches" in "\n".join(report.lines()), report.lines()


def test_a_punch_edited_after_the_prune_is_named_at_the_entry_that_carried_it(tmp_path: Path) -> None:
    path, _before, held = _pruned_buffer(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE punches SET user_id = '666' WHERE id = ?", (held,))
    first = verify(path, _head(path)).first_broken
    assert first is not None and first.seq == 9 and held in first.problem and "changed" in first.problem


def test_an_entry_edited_after_the_checkpoint_is_named(tmp_path: Path) -> None:
    path, _before, _held = _pruned_buffer(tmp_path)
    with tampered(path) as db:
        db.execute(
            "UPDATE audit SET entry = replace(entry, '\"delivered_before\"', '\"delivered_befor\"') WHERE seq = 7"
        )
    first = verify(path).first_broken
    assert first is not None and first.seq == 7 and "does not match its hash" in first.problem


def test_an_edited_checkpoint_is_found(tmp_path: Path) -> None:
    path, _before, _held = _pruned_buffer(tmp_path)
    with tampered(path) as db:  # claim fewer entries were pruned
        db.execute(
            "UPDATE audit SET entry = replace(entry, '\"entries_pruned\":5', '\"entries_pruned\":1') WHERE seq = 8"
        )
    first = verify(path).first_broken
    assert first is not None and first.seq == 8 and "does not match its hash" in first.problem


def test_a_moved_or_deleted_anchor_is_found(tmp_path: Path) -> None:
    path, _before, _held = _pruned_buffer(tmp_path)
    copy_path = tmp_path / "copy.db"
    with sqlite3.connect(path) as source, sqlite3.connect(copy_path) as copy:
        source.backup(copy)  # WAL included
    # Pruning further by hand: entry #6 too, anchor moved to it (its own hash, so #7 chains).
    with tampered(path) as db:
        (h6,) = db.execute("SELECT hash FROM audit WHERE seq = 6").fetchone()
        db.execute("DELETE FROM audit WHERE seq = 6")
        db.execute("UPDATE audit_anchor SET seq = 6, hash = ?", (h6,))
    first = verify(path).first_broken
    assert first is not None and "not where checkpoint #8 pruned the chain to (#5)" in first.problem
    # The anchor row deleted: the checkpoint still names the pruning, and says the row is gone.
    with tampered(copy_path) as db:
        db.execute("DELETE FROM audit_anchor")
    first = verify(copy_path).first_broken
    assert first is not None and first.seq == 6 and "anchor was deleted" in first.problem


def test_checkpoint_and_everything_before_cut_off_is_found(tmp_path: Path) -> None:
    path, _before, _held = _pruned_buffer(tmp_path)
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        store.add_punches(make_punches("door-3", 5))  # entry #10
    finally:
        store.close()
    with tampered(path) as db:  # cut the chain after #9 and move the anchor there
        (h9,) = db.execute("SELECT hash FROM audit WHERE seq = 9").fetchone()
        db.execute("DELETE FROM punches WHERE device != 'door-3'")
        db.execute("DELETE FROM audit WHERE seq <= 9")
        db.execute("UPDATE audit_anchor SET seq = 9, hash = ?", (h9,))
    first = verify(path).first_broken
    assert (
        first is not None
        and first.seq == 10
        and "no checkpoint entry signs that pruning off" in first.problem
    )


def test_the_gateway_cannot_cut_the_chain_without_a_checkpoint(tmp_path: Path) -> None:
    path, _before, _held = _pruned_buffer(tmp_path)
    with sqlite3.connect(path) as db:  # triggers in place: what the gateway's own code meets
        with pytest.raises(sqlite3.IntegrityError, match="only through a checkpoint"):
            db.execute("DELETE FROM audit WHERE seq = 6")
        with pytest.raises(sqlite3.IntegrityError, match="what a checkpoint entry names"):
            db.execute("UPDATE audit_anchor SET seq = 6")
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            db.execute("DELETE FROM audit_anchor")
        with pytest.raises(sqlite3.IntegrityError, match="never changed"):
            db.execute("UPDATE audit SET kind = 'x' WHERE seq = 7")
    assert verify(path, _head(path)).ok


def test_a_second_purge_carries_what_the_first_carried(tmp_path: Path) -> None:
    path, _before, held = _pruned_buffer(tmp_path)
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        store.purge_delivered(older_than_days=-1)  # prunes everything again, checkpoint included
        assert store.last_audit_entry("config_loaded") is not None
    finally:
        store.close()
    kinds = [k for _s, k, _e in _entries(path)]
    assert kinds[0] == "checkpoint" and set(kinds[1:]) == {"carried"}
    report = verify(path, _head(path))
    assert report.ok and report.punches_checked == 150, report.lines()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM punches WHERE id = ?", (held,))
    first = verify(path).first_broken
    assert first is not None and f"punch {held} was deleted" in first.problem


def test_a_tampered_range_is_not_pruned_and_stays_named(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    settings = BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0})
    store = Store.open(settings, gateway_id="gw")
    try:
        store.add_punches(make_punches("door-1", 20))
    finally:
        store.close()
    with tampered(path) as db:  # entry #2 (the punches) edited, triggers dropped with it
        db.execute("UPDATE audit SET entry = entry || ' ' WHERE seq = 2")
    store = Store.open(settings, gateway_id="gw")
    try:
        store.purge_delivered(older_than_days=-1)  # a checkpoint would launder the edit: refused
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT min(seq), count(*) FROM audit WHERE kind = 'checkpoint'").fetchone() == (
            None,
            0,
        )
        assert db.execute("SELECT count(*) FROM audit_anchor").fetchone() == (0,)
    first = verify(path).first_broken
    assert first is not None and first.seq == 2 and "does not match its hash" in first.problem


def test_a_long_range_is_pruned_over_several_purges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_prune, "MAX_PAIRS_PER_PRUNE", 150)  # 50,000 in service
    path = tmp_path / "buffer.db"
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    anchors = []
    try:
        for start in range(0, 300, 100):  # entries #2, #3, #4: 100 punches each
            store.add_punches(make_punches("door-1", 100, start=start))
        for _ in range(2):
            store.purge_delivered(older_than_days=-1)  # nothing delivered: only the chain is pruned
            with sqlite3.connect(path) as db:
                anchors.append(db.execute("SELECT seq FROM audit_anchor").fetchone()[0])
            report = verify(path, _head(path))
            assert report.ok and report.punches_checked == 300, report.lines()
    finally:
        store.close()
    assert anchors[0] == 3  # #1 and #2, then #3 reached the cap: the first purge stopped there
    assert anchors[1] > anchors[0]  # the next one went on from it
