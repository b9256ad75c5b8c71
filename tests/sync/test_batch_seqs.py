"""Batch numbers for a read window: strictly increasing per device, reserved before they are
handed out, and reserved for a whole backlog in one commit rather than one per terminal."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sqlalchemy import event

from punchgate.sync.buffer_devices import SEQ_BLOCK
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import interleaved


def open_store(path: Path) -> Store:
    return Store.open(BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}))


def reserved(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT device, reserved_until FROM batch_seq"))


def test_a_backlog_reserves_every_terminal_in_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = open_store(path)
    devices = [f"t{n:03d}" for n in range(50)]
    store.add_punches(list(interleaved(devices, 3)))
    commits: list[int] = []

    def counted(_conn: object) -> None:
        commits.append(1)

    event.listen(store._engine, "commit", counted)
    try:
        assert store.next_batch_seqs(["t000", "t001", "t000"]) == [1, 1, 2]
        # Every terminal with pending punches got its block in that same commit.
        assert len(commits) == 1
        assert set(reserved(path)) == set(devices)
        for device in devices[2:]:
            assert store.next_batch_seqs([device]) == [1]
        assert len(commits) == 1, "a terminal of the backlog needed a commit of its own"
    finally:
        event.remove(store._engine, "commit", counted)
        store.close()


def test_more_numbers_than_a_block_in_one_window(tmp_path: Path) -> None:
    store = open_store(tmp_path / "buffer.db")
    try:
        many = store.next_batch_seqs(["live"] * (SEQ_BLOCK + 5))
        assert many == list(range(1, SEQ_BLOCK + 6))
        assert store.next_batch_seqs(["live"]) == [SEQ_BLOCK + 6]
    finally:
        store.close()


def test_numbers_never_repeat_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = open_store(path)
    first = store.next_batch_seqs(["a", "b", "a"])
    store.close()  # a crash after handing them out must not hand them out again
    reopened = open_store(path)
    try:
        again = reopened.next_batch_seqs(["a", "b"])
        assert again[0] > max(first[0], first[2]) and again[1] > first[1]
    finally:
        reopened.close()


def test_numbers_from_threads_are_unique_and_increasing(tmp_path: Path) -> None:
    store = open_store(tmp_path / "buffer.db")
    got: dict[int, list[int]] = {}

    def take(n: int) -> None:
        got[n] = [seq for _ in range(300) for seq in store.next_batch_seqs(["shared"])]

    threads = [threading.Thread(target=take, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    everything = [seq for seqs in got.values() for seq in seqs]
    assert len(set(everything)) == len(everything) == 1200
    assert all(seqs == sorted(seqs) for seqs in got.values())


def test_a_restarted_fleet_reserves_every_block_in_a_few_statements(tmp_path: Path) -> None:
    """After a restart every terminal with something pending needs a new block: one read and
    one write for all of them (1,200 terminals, more than one IN list), not two statements
    each; the new blocks start past the old ones, and a terminal new to the file starts at 1."""
    path = tmp_path / "buffer.db"
    devices = [f"t{n:04d}" for n in range(1200)]
    store = open_store(path)
    store.add_punches(list(interleaved(devices[:1000], 1)))
    before = store.next_batch_seqs(devices[:1000])
    store.close()
    assert before == [1] * 1000
    reopened = open_store(path)
    statements: list[str] = []

    def counted(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.split()[0].upper())

    reopened.add_punches(list(interleaved(devices, 1)))
    event.listen(reopened._engine, "before_cursor_execute", counted)
    try:
        assert reopened.next_batch_seqs(["t0000", "t1199"]) == [SEQ_BLOCK + 1, 1]
        assert statements.count("SELECT") <= 4 and statements.count("UPDATE") <= 1, statements
        assert statements.count("INSERT") <= 1, statements
        assert reserved(path) == {d: 2 * SEQ_BLOCK if n < 1000 else SEQ_BLOCK for n, d in enumerate(devices)}
        assert reopened.next_batch_seqs(["t0999", "t1000"]) == [SEQ_BLOCK + 1, 1]
    finally:
        event.remove(reopened._engine, "before_cursor_execute", counted)
        reopened.close()
