"""The drain reads whole messages per terminal, whatever way the terminals' rows interleave in
the buffer, keeps each terminal's rows oldest first, and keeps the pending counts exact when it
marks rows delivered without RETURNING (issue 18). Real SQLite files; a real mosquitto for the
end-to-end drain."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from punchgate.sync import buffer_counts, buffer_delivery
from punchgate.sync.buffer_delivery import DeviceRows
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.forwarder_drain import READ_AHEAD_BATCHES, messages_of
from punchgate.sync.records import Punch
from punchgate.sync.store import Store
from tests.support.broker import Broker
from tests.support.factories import make_punch
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_for_async
from tests.sync.helpers import make_settings, open_store, running

NO_BROKER = 1  # the settings need a port; these tests read and mark the buffer only


def in_turns(devices: list[str], per_device: int, run: int, *, start: int = 0) -> list[Punch]:
    """`run` punches of each terminal in turn, as polling through an outage stores them."""
    punches: list[Punch] = []
    for first in range(start, start + per_device, run):
        for device in devices:
            punches.extend(make_punch(device, n) for n in range(first, min(first + run, start + per_device)))
    return punches


def drain_reads(store: Store, limit: int, per_device: int) -> list[list[DeviceRows]]:
    """Every read the drain would make until nothing unread is pending (one session)."""
    after, read_up_to = 0, dict[str, int]()
    reads: list[list[DeviceRows]] = []
    while True:
        groups, after = buffer_delivery.pending_per_device(
            store, limit, per_device, after=after, read_up_to=read_up_to
        )
        if not groups:
            return reads
        reads.append(groups)


async def test_interleaved_backlog_goes_out_in_full_messages_oldest_first(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    batch = 50
    devices = [f"t{n:02d}" for n in range(30)]
    # 5 of each terminal in turn: a read window of READ_AHEAD_BATCHES messages' worth of rows in
    # pk order (500) holds about 16 of each terminal, so a drain reading in pk order fills none.
    punches = in_turns(devices, 200, 5)
    assert len(devices) * 5 * 2 < batch * READ_AHEAD_BATCHES < len(punches)
    settings = make_settings(tmp_path, broker.port, batch_size=batch)
    store = open_store(settings)
    store.add_punches(punches)
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await wait_for_async(lambda: store.pending_count() == 0, timeout=60)
        assert await asyncio.to_thread(subscriber.wait_records, len(punches), timeout=60)
    messages = [m.json() for m in subscriber.on("/punches")]
    assert [len(m["records"]) for m in messages] == [batch] * (len(punches) // batch)
    for device in devices:
        assert subscriber.reconciler.in_order(device, [p.id for p in punches if p.device == device])
        assert [m["device"] for m in messages].count(device) == 200 // batch
    assert subscriber.reconciler.duplicates == 0
    assert store.delivered_ids() == {p.id for p in punches}
    assert buffer_counts.recount_pending(store)
    store.close()


def test_reads_cover_every_pending_row_once_in_order_per_terminal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, NO_BROKER)
    store = open_store(settings)
    devices = ["a", "b", "c", "d"]
    store.add_punches(in_turns(devices, 23, 3))
    # A terminal of its own at the end, and one whose rows all come before the others'.
    store.add_punches([make_punch("late", n) for n in range(9)])
    reads = drain_reads(store, limit=10, per_device=4)
    seen = [(group.device, pk) for groups in reads for group in groups for pk in group.pks]
    pending = [(row.device, row.pk) for row in store.pending_batch(10_000)]
    assert sorted(seen, key=lambda item: item[1]) == pending  # each pending row read exactly once
    for device, sizes in [*[(d, [4, 4, 4, 4, 4, 3]) for d in devices], ("late", [4, 4, 1])]:
        pks = [pk for name, pk in seen if name == device]
        assert pks == sorted(pks)  # oldest first per terminal, across reads
        # Full reads of each terminal (messages), only its last one short.
        assert [len(g.pks) for groups in reads for g in groups if g.device == device] == sizes
    # A read takes whole terminal reads until it holds `limit` rows or more (never one more read).
    assert all(sum(len(g.pks) for g in groups[:-1]) < 10 for groups in reads)
    store.close()


def test_rows_stored_between_reads_are_read_too(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, NO_BROKER)
    store = open_store(settings)
    store.add_punches(in_turns(["a", "b"], 10, 2))
    after, read_up_to = 0, dict[str, int]()
    first, after = buffer_delivery.pending_per_device(store, 4, 4, after=after, read_up_to=read_up_to)
    assert [(g.device, len(g.pks)) for g in first] == [("a", 4)]
    # Newer rows of a terminal read ahead of the cursor, and of one that was not read yet.
    store.add_punches([make_punch("a", 10), make_punch("b", 10), make_punch("c", 0)])
    groups: list[DeviceRows] = []
    while True:
        more, after = buffer_delivery.pending_per_device(store, 4, 4, after=after, read_up_to=read_up_to)
        if not more:
            break
        groups.extend(more)
    every = [pk for g in first + groups for pk in g.pks]
    assert sorted(every) == [row.pk for row in store.pending_batch(100)]
    assert len(every) == len(set(every)) == 23
    store.close()


def test_a_live_punch_goes_alone_after_older_rows_of_its_terminal() -> None:
    group = DeviceRows(
        "a", (1, 2, 3, 4, 5), ("poll", "poll", "live", "poll", "poll"), ("1", "2", "3", "4", "5")
    )
    backlog = DeviceRows("b", (6, 7), ("poll", "poll"), ("6", "7"))
    messages = messages_of([group, backlog], batch_size=500)
    assert [(m.device, list(m.pks), list(m.records)) for m in messages] == [
        ("a", [1, 2], ["1", "2"]),
        ("a", [3], ["3"]),
        ("a", [4, 5], ["4", "5"]),
        ("b", [6, 7], ["6", "7"]),
    ]


def test_counted_marks_keep_the_pending_counts_exact(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, NO_BROKER)
    store = open_store(settings)
    store.add_punches(in_turns(["a", "b"], 6, 2))
    rows = store.pending_batch(100)
    pks = [r.pk for r in rows]
    by_device = Counter(r.device for r in rows)
    # Some rows delivered already (a replay's earlier send): the counted mark must not count them.
    assert store.mark_delivered([rows[0].pk, rows[5].pk]) == 2
    assert buffer_delivery.mark_delivered(store, pks, by_device) == 10
    assert store.pending_count() == 0 and store.pending_devices() == {}
    assert buffer_counts.recount_pending(store)
    store.close()


def test_counted_marks_with_a_row_given_twice(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, NO_BROKER)
    store = open_store(settings)
    store.add_punches(in_turns(["a", "b"], 4, 1))
    rows = store.pending_batch(100)
    twice = [rows[0].pk, *[r.pk for r in rows[:3]]]
    assert buffer_delivery.mark_delivered(store, twice, Counter({"a": 3, "b": 1})) == 3
    assert store.pending_devices() == {"a": 2, "b": 3}
    # The plain case: every counted row pending, no RETURNING needed.
    rest = [r.pk for r in rows[3:]]
    assert buffer_delivery.mark_delivered(store, rest, Counter(r.device for r in rows[3:])) == 5
    assert store.pending_count() == 0
    assert buffer_counts.recount_pending(store)
    store.close()
