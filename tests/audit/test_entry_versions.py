"""`punches` entries in both versions against real SQLite files: a chain written before issue 16
(version 1, `[id, hex digest]` pairs) and continued by today's code (version 2: the ids and the
digests as base64 texts, or a list of ids that are not hex) verifies; a punch edited or deleted under either version is named
with its entry; a version 2 entry whose digests were edited is named at that entry; a rewritten
chain that stays consistent is still caught against the published head; pruning a mixed chain
carries both versions' digests."""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from punchgate.sync import audit
from punchgate.sync.audit_verify import verify
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.audit.tampering import tampered
from tests.support.factories import make_punches


def _version1(conn: Any, rows: Sequence[Sequence[Any]], *, at: str | None = None) -> audit.Head:
    """What `append_punches` wrote before issue 16: one entry of `[id, hex digest]` pairs per
    1,000 punches, through `canonical` (the same text, byte for byte)."""
    chunks = (
        {"punches": [[row[0], audit.punch_digest(row)] for row in rows[start : start + 1000]]}
        for start in range(0, len(rows), 1000)
    )
    return audit.append_many(conn, "punches", chunks, at=at)


def _open(path: Path) -> Store:
    return Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )


def _mixed_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Entries #2, #3: version 1 (door-1, 100 punches each); #4, #5: version 2 (door-2)."""
    path = tmp_path / "buffer.db"
    with monkeypatch.context() as old_code:
        old_code.setattr(audit, "append_punches", _version1)
        store = _open(path)
        try:
            for start in (0, 100):
                store.add_punches(make_punches("door-1", 100, start=start))
        finally:
            store.close()
    store = _open(path)
    try:
        for start in (0, 100):
            store.add_punches(make_punches("door-2", 100, start=start))
    finally:
        store.close()
    return path


def _head(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as db:
        head = audit.head(db)
    assert head is not None
    return {**head.as_dict(), "gateway": "gw"}


def _entries(path: Path) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(path) as db:
        return {int(s): json.loads(e) for s, e in db.execute("SELECT seq, entry FROM audit ORDER BY seq")}


def _a_punch_of(path: Path, seq: int) -> str:
    return audit.entry_pairs(_entries(path)[seq])[37][0]


def test_a_chain_of_both_versions_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _mixed_buffer(tmp_path, monkeypatch)
    entries = _entries(path)
    assert [e.get("v") for e in entries.values()] == [None, None, None, 2, 2]
    assert "punches" in entries[2] and "id_bytes" in entries[4] and "punches" not in entries[4]
    report = verify(path, _head(path))
    assert report.ok, report.lines()
    assert report.entries == 5 and report.punches_checked == 400


def test_both_versions_record_the_same_digest_of_a_row(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = _open(path)
    try:
        store.add_punches(make_punches("door-1", 3))
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT id, device, user_id, utc_time, source, payload, raw, stored_at FROM punches ORDER BY pk"
        ).fetchall()
        (text,) = db.execute("SELECT entry FROM audit WHERE kind = 'punches'").fetchone()
    entry = json.loads(text)
    assert text == audit.canonical(entry) and entry["v"] == 2
    assert len(base64.b64decode(entry["digests"])) == 3 * audit.DIGEST_BYTES
    assert audit.entry_pairs(entry) == [(row[0], audit.punch_digest(row)) for row in rows]


def test_ids_that_need_escaping_are_spelled_canonically() -> None:
    for ids in ([1, 2], ["a1", "b2"], ['quote"d', "back\\slash", "tab\there", "ünï"], [], ["x"]):
        assert audit.ids_text(ids) == audit.canonical(ids)


def test_only_ids_of_32_lowercase_hex_digits_are_packed() -> None:
    hex_id = "f4272c4fc22148389c286c4c3fbd4cde"
    packed = audit.ids_field([hex_id, "0" * 32])
    assert packed.startswith('"id_bytes":"')
    digests = base64.b64encode(bytes(32)).decode()
    assert audit.entry_pairs(json.loads(f'{{{packed},"digests":"{digests}","v":2}}'))[0] == (hex_id, "0" * 32)
    for ids in ([hex_id.upper()], [hex_id[:31] + " "], [hex_id[:31], hex_id + "a"], [hex_id, "x"], [7], []):
        assert audit.ids_field(ids) == f'"ids":{audit.canonical(ids)}', ids


def test_punches_with_other_ids_are_listed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = _open(path)
    try:
        store.add_punches([dataclasses.replace(p, id=f"X-{p.id}") for p in make_punches("door-1", 20)])
    finally:
        store.close()
    entry = _entries(path)[2]
    assert entry["ids"][0].startswith("X-") and "id_bytes" not in entry
    assert verify(path, _head(path)).ok
    ident = entry["ids"][7]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE punches SET device = 'door-9' WHERE id = ?", (ident,))
    first = verify(path).first_broken
    assert first is not None and first.seq == 2 and ident in first.problem


@pytest.mark.parametrize("seq", [2, 5], ids=["version 1", "version 2"])
def test_an_edited_punch_is_named_in_either_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seq: int
) -> None:
    path = _mixed_buffer(tmp_path, monkeypatch)
    ident = _a_punch_of(path, seq)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE punches SET utc_time = '2024-03-04T05:00:00+00:00' WHERE id = ?", (ident,))
    first = verify(path, _head(path)).first_broken
    assert first is not None and first.seq == seq
    assert ident in first.problem and "was changed after it was stored" in first.problem


@pytest.mark.parametrize("seq", [3, 4], ids=["version 1", "version 2"])
def test_a_deleted_punch_is_named_in_either_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seq: int
) -> None:
    path = _mixed_buffer(tmp_path, monkeypatch)
    ident = _a_punch_of(path, seq)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM punches WHERE id = ?", (ident,))
    first = verify(path, _head(path)).first_broken
    assert first is not None and first.seq == seq and f"punch {ident} was deleted" in first.problem


def test_edited_digests_of_a_version_2_entry_are_named_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _mixed_buffer(tmp_path, monkeypatch)
    head = _head(path)
    entry = _entries(path)[4]
    raw = bytearray(base64.b64decode(entry["digests"]))
    raw[5 * audit.DIGEST_BYTES] ^= 1  # the sixth punch's digest
    edited = audit.canonical({**entry, "digests": base64.b64encode(bytes(raw)).decode()})
    with tampered(path) as db:
        db.execute("UPDATE audit SET entry = ? WHERE seq = 4", (edited,))
    first = verify(path).first_broken
    assert first is not None and first.seq == 4 and "does not match its hash" in first.problem
    # Rehashed from #4 on, the chain is consistent in itself: the sixth punch no longer matches
    # its (forged) digest, and the published head names the rewrite.
    with tampered(path) as db:
        previous = db.execute("SELECT hash FROM audit WHERE seq = 3").fetchone()[0]
        for seq, text in db.execute("SELECT seq, entry FROM audit WHERE seq >= 4 ORDER BY seq").fetchall():
            previous = audit.chain_hash(previous, text)
            db.execute("UPDATE audit SET hash = ? WHERE seq = ?", (previous, seq))
    sixth = audit.entry_pairs(entry)[5][0]
    report = verify(path, head)
    first = report.first_broken
    assert first is not None and first.seq == 4 and sixth in first.problem and "changed" in first.problem
    assert any("rewritten at or before #5" in f.problem for f in report.findings)


def test_a_version_2_entry_whose_ids_and_digests_disagree_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _mixed_buffer(tmp_path, monkeypatch)
    entry = _entries(path)[5]
    fewer = base64.b64encode(base64.b64decode(entry["id_bytes"])[:-16]).decode()
    short = audit.canonical({**entry, "id_bytes": fewer})  # one digest more than ids
    with tampered(path) as db:
        previous = db.execute("SELECT hash FROM audit WHERE seq = 4").fetchone()[0]
        db.execute(
            "UPDATE audit SET entry = ?, hash = ? WHERE seq = 5", (short, audit.chain_hash(previous, short))
        )
    first = verify(path).first_broken
    assert first is not None and first.seq == 5 and "cannot be read" in first.problem
    assert "names 99 punches but holds 100 digests" in first.problem


def test_a_mixed_chain_prunes_and_carries_both_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _mixed_buffer(tmp_path, monkeypatch)
    old_one, new_one = _a_punch_of(path, 2), _a_punch_of(path, 5)
    store = _open(path)
    try:
        store.purge_delivered(older_than_days=-1)  # nothing delivered: the whole chain is pruned
    finally:
        store.close()
    kinds = [e["kind"] for e in _entries(path).values()]
    assert kinds == ["checkpoint", "carried"]  # 400 pairs, version 1 and 2 alike
    report = verify(path, _head(path))
    assert report.ok and report.punches_checked == 400, report.lines()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE punches SET user_id = '666' WHERE id IN (?, ?)", (old_one, new_one))
    problems = [f.problem for f in verify(path).findings]
    assert any(old_one in p and "changed" in p for p in problems)
    assert any(new_one in p and "changed" in p for p in problems)
