"""Pending counts kept by the store: exact through every write path, and cheap to read.

`/metrics`, `/api/devices` and `punchgate status` show undelivered punches per terminal. The
store counts them in the table once, at open, and keeps them from the rows each committed
statement changed. These tests hold both halves: the kept counts always equal the table's
(through inserts, delivery, confirmation, replay, purge, a reopen), and with a large buffer
the status and metrics paths run no statement that scans the punches table.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway.clock import GatewayClock
from punchgate.gateway.faults import FaultSet
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.metrics import render_metrics
from punchgate.gateway.settings import Settings
from punchgate.gateway.status import gateway_status
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import interleaved, make_punches


def open_store(path: Path) -> Store:
    return Store.open(BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}))


def table_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT device, count(*) FROM punches WHERE delivered_at IS NULL GROUP BY device")
        return {device: count for device, count in rows}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(tmp_path / "buffer.db")
    yield opened
    opened.close()


def assert_counts_match(store: Store) -> None:
    # First: recount_pending compares the kept counts as they are (pending_devices would
    # correct a kept total that disagrees with the devices' counts before anyone saw it).
    assert store.recount_pending(), "the counts kept in memory drifted from the table"
    counted = table_counts(store.path)
    assert store.pending_devices() == counted
    assert store.pending_count() == sum(counted.values())
    for device, count in counted.items():
        assert store.pending_count(device) == count


def test_counts_follow_every_write_path(store: Store) -> None:
    assert store.pending_devices() == {} and store.pending_count("nobody") == 0
    store.add_punches(list(interleaved(["a", "b", "c"], 40)))
    store.add_punches(make_punches("a", 10))  # all known: nothing changes
    assert_counts_match(store)
    assert store.pending_devices() == {"a": 40, "b": 40, "c": 40}

    rows = store.pending_batch(50)
    assert store.mark_delivered([r.pk for r in rows]) == 50
    assert store.mark_delivered([r.pk for r in rows]) == 0  # delivered already: no change
    assert_counts_match(store)

    # Every row of "b" delivered: the device leaves the pending counts.
    b_rows = [r.pk for r in store.pending_batch(1000) if r.device == "b"]
    store.mark_delivered(b_rows)
    assert "b" not in store.pending_devices() and store.pending_count("b") == 0
    assert_counts_match(store)

    assert store.requeue_delivered(since=0, device="b") == 40
    assert_counts_match(store)
    assert store.requeue_delivered(since=0) > 0
    assert_counts_match(store)

    # Central delivery: sent rows stay pending until confirmed, by id or by pk.
    rows = store.pending_batch(30)
    store.mark_sent([r.pk for r in rows])
    assert_counts_match(store)
    done = store.confirm_pks([r.pk for r in rows[:10]])
    assert done.total == 10 and sum(done.devices.values()) == 10
    ids = [store_id for (store_id,) in sqlite3.connect(store.path).execute("SELECT id FROM punches LIMIT 60")]
    store.confirm_ids(ids)
    assert_counts_match(store)

    # The remote punches.resend: one terminal's delivered punches of a time range.
    c_rows = [r.pk for r in store.pending_batch(1000) if r.device == "c"]
    store.mark_delivered(c_rows)
    assert_counts_match(store)
    since, until = dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert store.requeue_range("c", utc_from=since, utc_to=until) == 40  # every row of "c"
    assert_counts_match(store)

    # A purge removes delivered rows only: the pending counts stay.
    before = store.pending_devices()
    store.purge_delivered(older_than_days=-1)
    assert store.pending_devices() == before
    assert_counts_match(store)


def test_counts_are_counted_again_at_open(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = open_store(path)
    store.add_punches(list(interleaved(["x", "y"], 25)))
    store.close()
    # Behind the store's back (a tool, a restore): the file is the truth at the next open.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE punches SET delivered_at = 1 WHERE device = 'x'")
    reopened = open_store(path)
    try:
        assert reopened.pending_devices() == {"y": 25} == table_counts(path)
        assert reopened.pending_count() == 25
    finally:
        reopened.close()


def test_a_write_path_that_kept_only_the_total_is_counted_again(store: Store) -> None:
    """The kept total and the devices' counts must agree; if a write path ever updates only
    the total, the devices' counts are taken from the table again rather than shown wrong."""
    store.add_punches(make_punches("a", 5))
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE punches SET delivered_at = NULL")  # nothing changes: all pending
        db.execute("UPDATE punches SET delivered_at = 1 WHERE rowid <= 2")
    store._limits.pending -= 2  # as a path that knew the rows but not their devices would
    assert store.pending_devices() == {"a": 3} == table_counts(store.path)


# --- a large buffer: the status paths never scan it -------------------------------------------
BIG = 200_000  # rows; a 1M-row buffer shows the same plans, only slower to build
TERMINALS = 500


def fill_raw(path: Path, rows: int, terminals: int) -> None:
    """`rows` pending punches of `terminals` terminals in a store-created file, by raw SQL."""
    open_store(path).close()  # the schema, identity and audit anchor
    payload = '{"id":"x"}'
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA synchronous = OFF")
        db.execute(
            """
            WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?)
            INSERT INTO punches (id, device, user_id, utc_time, source, payload, raw, stored_at)
            SELECT printf('%032x', x), printf('t%03d', x % ?), '7',
                   '2024-03-04T07:00:00+00:00', 'poll', ?, x'00', 1700000000 + x FROM n
            """,
            (rows, terminals, payload),
        )


class FakeStats:
    punches_published = messages_published = publish_failures = reconnects = 0


class FakeForwarder:
    connected = True
    central = None
    stats = FakeStats()


class StoreApp:
    """What gateway.status and gateway.metrics read from the Application, with a real store."""

    def __init__(self, store: Store, terminals: int) -> None:
        names = [f"t{n:03d}" for n in range(terminals)]
        self.settings = Settings.model_validate(
            {
                "gateway_id": "gw-big",
                "terminals": [
                    {"type": "zk", "name": name, "host": "192.0.2.10", "port": 10_000 + n}
                    for n, name in enumerate(names)
                ],
            }
        )
        self.started_at = dt.datetime.now(dt.UTC)
        self.store = store
        self.forwarder: Any = FakeForwarder()
        self.gateway_faults = FaultSet("")
        self.gateway_clock = GatewayClock("trust")
        self.loop_heartbeat = time.monotonic()
        self.fault_transitions: dict[tuple[str, str, str], int] = {}
        self.devices = {}
        for name in names:
            health = DeviceHealth(name)
            health.contact_ok(DeviceInfo(serial_number=f"S-{name}", record_count=10), drift_seconds=None)
            self.devices[name] = health

    def forwarder_alive(self) -> bool:
        return True


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("big") / "buffer.db"
    fill_raw(path, BIG, TERMINALS)
    opened = open_store(path)
    yield opened
    opened.close()


def statements_during(store: Store, call: Any) -> list[tuple[str, Any]]:
    """The statements (with their parameters) `call` runs through the store's engine."""
    seen: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(store._engine, "before_cursor_execute", note)
    try:
        call()
    finally:
        event.remove(store._engine, "before_cursor_execute", note)
    return seen


def vm_steps(path: Path, statement: str, parameters: Any) -> int:
    """How many SQLite virtual-machine instructions `statement` takes on `path` (to the
    nearest 100): the work it does, whatever the machine's load. Reading every row of a
    200k-row table or index takes millions."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 100
        return 0

    with sqlite3.connect(path) as db:
        db.set_progress_handler(tick, 100)
        db.execute(statement, parameters).fetchall()
    return steps


def test_status_and_metrics_never_scan_a_big_buffer(big_store: Store) -> None:
    app: Any = StoreApp(big_store, TERMINALS)
    assert big_store.pending_count() == BIG
    status = gateway_status(app)
    assert status["gateway"]["pending"] == BIG
    assert sum(d["pending"] for d in status["devices"]) == BIG
    assert b'punchgate_buffer_pending_punches{device="t001"} 400.0' in render_metrics(app)

    for name, call in (("status", lambda: gateway_status(app)), ("metrics", lambda: render_metrics(app))):
        statements = statements_during(big_store, call)
        assert len(statements) <= 2, f"{name} ran {statements}"
        for statement, parameters in statements:
            steps = vm_steps(big_store.path, statement, parameters)
            assert steps < 10_000, f"{name}: {statement} took {steps} VM steps"
    # The check itself can tell: counting the pending rows per device takes ~8 steps a row.
    group_by = "SELECT device, count(*) FROM punches WHERE delivered_at IS NULL GROUP BY device"
    assert vm_steps(big_store.path, group_by, ()) > 5 * BIG


def test_status_costs_about_what_a_trivial_read_costs(big_store: Store) -> None:
    """Side by side, interleaved: the status of 500 terminals and 200k pending punches against
    the same status with an empty buffer. Counting the table would make it hundreds of times
    slower; kept counts leave only the per-terminal work, the same in both."""
    app: Any = StoreApp(big_store, TERMINALS)
    empty_path = big_store.path.parent / "empty.db"
    empty = open_store(empty_path)
    try:
        empty_app: Any = StoreApp(empty, TERMINALS)
        big: list[float] = []
        small: list[float] = []
        for _ in range(15):
            for target, times in ((app, big), (empty_app, small)):
                started = time.perf_counter()
                gateway_status(target)
                times.append(time.perf_counter() - started)
        ratio = statistics.median(big) / statistics.median(small)
        assert ratio < 3, (
            f"status with {BIG} pending: {statistics.median(big) * 1000:.1f} ms, {ratio:.1f}× empty"
        )
    finally:
        empty.close()


def test_the_digests_look_at_new_rows_only(big_store: Store) -> None:
    """Every few seconds the digest publisher asks which terminals and days the newest punches
    touched: that reads those rows, not the table (SQLite once chose to read all of it through
    the terminal-and-time index, for its GROUP BY order)."""
    newest = big_store.max_pk()
    statements = statements_during(big_store, lambda: big_store.days_stored_since(newest - 100))
    ((statement, parameters),) = [(s, p) for s, p in statements if s.startswith("SELECT")]
    assert vm_steps(big_store.path, statement, parameters) < 10_000
    changed, top = big_store.days_stored_since(newest - 100)
    assert top == newest and len(changed) == 100  # 100 rows of 100 terminals in turn
