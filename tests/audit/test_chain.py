"""The audit chain against real SQLite files changed behind the gateway's back with sqlite3:
an edited punch, a deleted one, a cut-off tail and a consistent forgery are each found, and
the first broken entry is named; purges and replays keep the chain verifiable."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from punchgate.sync import audit
from punchgate.sync.audit_verify import verify
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.audit.tampering import tampered
from tests.support.factories import make_punches
from tests.support.gateway import REPO


def _buffer(tmp_path: Path, name: str = "buffer.db") -> Path:
    path = tmp_path / name
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        for start in range(0, 300, 100):
            store.add_punches(make_punches("door-1", 100, start=start))
        store.audit_action("config_loaded", {"digest": "x", "changed": []})
        store.add_punches(make_punches("door-2", 50))
    finally:
        store.close()
    return path


def _head(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as db:
        head = audit.head(db)
    assert head is not None
    return {**head.as_dict(), "gateway": "gw"}


def _entry_of(path: Path, punch_id: str) -> int:
    with sqlite3.connect(path) as db:
        for seq, text in db.execute("SELECT seq, entry FROM audit WHERE kind = 'punches'"):
            if any(item[0] == punch_id for item in audit.entry_pairs(json.loads(text))):
                return int(seq)
    raise AssertionError(f"{punch_id} is in no entry")


def test_an_untouched_chain_verifies(tmp_path: Path) -> None:
    path = _buffer(tmp_path)
    report = verify(path, _head(path))
    assert report.ok, report.lines()
    assert report.entries == 6 and report.punches_checked == 350  # started, 3 punches, config, punches


def test_every_entry_is_stored_as_its_canonical_json(tmp_path: Path) -> None:
    # append_punches builds its text by hand for speed: it must be the canonical spelling.
    path = _buffer(tmp_path)
    with sqlite3.connect(path) as db:
        texts = [text for (text,) in db.execute("SELECT entry FROM audit ORDER BY seq")]
    assert texts and all(text == audit.canonical(json.loads(text)) for text in texts)
    assert all(len(json.loads(text)["at"]) == len("2026-03-02T09:14:03.120Z") for text in texts)


def test_an_edited_punch_time_is_named(tmp_path: Path) -> None:
    path = _buffer(tmp_path)
    head = _head(path)
    with sqlite3.connect(path) as db:
        ident, payload = db.execute("SELECT id, payload FROM punches WHERE pk = 150").fetchone()
        db.execute(
            "UPDATE punches SET payload = ?, utc_time = '2024-03-04T05:00:00+00:00' WHERE pk = 150",
            (payload.replace('"local_time":"2024-03-04T07:02:29"', '"local_time":"2024-03-04T06:02:29"'),),
        )
    report = verify(path, head)
    first = report.first_broken
    assert first is not None and first.seq == _entry_of(path, ident)
    assert ident in first.problem and "was changed after it was stored" in first.problem


def test_a_deleted_punch_is_named(tmp_path: Path) -> None:
    path = _buffer(tmp_path)
    with sqlite3.connect(path) as db:
        (ident,) = db.execute("SELECT id FROM punches WHERE pk = 42").fetchone()
        db.execute("DELETE FROM punches WHERE pk = 42")
    first = verify(path, _head(path)).first_broken
    assert first is not None and first.seq == _entry_of(path, ident)
    assert f"punch {ident} was deleted" in first.problem


def test_an_edited_entry_breaks_the_chain_there(tmp_path: Path) -> None:
    path = _buffer(tmp_path)
    with tampered(path) as db:
        db.execute(
            'UPDATE audit SET entry = replace(entry, \'"digest":"x"\', \'"digest":"y"\') WHERE seq = 5'
        )
    first = verify(path).first_broken
    assert first is not None and first.seq == 5 and "does not match its hash" in first.problem


def test_a_truncated_tail_is_found_against_the_published_head(tmp_path: Path) -> None:
    path = _buffer(tmp_path)
    head = _head(path)  # what central holds: #6
    with tampered(path) as db:  # cut off the last entry and the punches it covered
        ids = [
            item[0]
            for item in audit.entry_pairs(
                json.loads(db.execute("SELECT entry FROM audit WHERE seq = 6").fetchone()[0])
            )
        ]
        db.execute(f"DELETE FROM punches WHERE id IN ({','.join('?' * len(ids))})", ids)
        db.execute("DELETE FROM audit WHERE seq = 6")
    assert verify(path).ok  # consistent in itself: only the head can tell
    report = verify(path, head)
    first = report.first_broken
    assert first is not None and first.seq == 6 and "truncated" in first.problem


def test_a_consistent_forgery_is_found_against_the_published_head(tmp_path: Path) -> None:
    real = _buffer(tmp_path)
    head = _head(real)
    forged = tmp_path / "forged"
    forged.mkdir()
    shutil.copy(_buffer(forged), real)  # a whole other file, with a chain of its own, same length
    for suffix in ("-wal", "-shm"):
        Path(f"{real}{suffix}").unlink(missing_ok=True)
    assert verify(real).ok
    first = verify(real, head).first_broken
    assert first is not None and first.seq == 6 and "rewritten" in first.problem


def test_purges_and_replays_keep_the_chain_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    heads: list[audit.Head] = []
    store.on_audit_action.append(heads.append)
    try:
        store.add_punches(make_punches("door-1", 200))
        store.mark_delivered([row.pk for row in store.pending_batch(150)])
        assert store.requeue_delivered(since=0) == 150
        store.mark_delivered([row.pk for row in store.pending_batch(150)])
        assert store.purge_delivered(older_than_days=-1) == 150  # everything delivered goes
        store.add_punches(make_punches("door-1", 10))  # one purged punch comes back (re-read)
    finally:
        store.close()
    # The purge signed the deletions off, then pruned the whole chain (all of it older than a
    # retention of -1 day) through a checkpoint carrying the 50 punches still held.
    assert [h.kind for h in heads] == ["replay", "carried"]
    report = verify(path, _head(path))
    assert report.ok, report.lines()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM punches WHERE pk = (SELECT max(pk) FROM punches)")
    assert not verify(path).ok


def test_the_cli_names_the_first_broken_entry(tmp_path: Path) -> None:
    path = _buffer(tmp_path)
    head_file = tmp_path / "head.json"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "punchgate.gateway", "audit", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )

    saved = run("head", "--buffer", str(path), "--out", str(head_file))
    assert saved.returncode == 0, saved.stderr
    good = run("verify", "--buffer", str(path), "--head", str(head_file))
    assert good.returncode == 0 and "OK" in good.stdout and "matches" in good.stdout
    with sqlite3.connect(path) as db:
        db.execute("UPDATE punches SET user_id = '666' WHERE pk = 10")
    bad = run("verify", "--buffer", str(path), "--head", str(head_file))
    assert bad.returncode == 1 and "BROKEN at entry #2" in bad.stdout
    missing = run("verify", "--buffer", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no such buffer file" in missing.stderr
