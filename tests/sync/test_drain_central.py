"""Central delivery reads its unsent rows as broker mode reads its pending ones: whole messages
per terminal, oldest first per terminal, whatever way the terminals' rows interleave in the
buffer; only a confirmation delivers a row, each row is delivered once, and a row nobody
confirmed goes out again after `resend_after`. Real SQLite files; a real mosquitto and a real
confirming consumer (tests/confirm/confirmer.py) for the end-to-end drains."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from punchgate.sync import buffer_counts, buffer_delivery
from punchgate.sync.buffer_delivery import DeviceRows
from punchgate.sync.confirmations_memory import record_id_of
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.forwarder_drain import READ_AHEAD_BATCHES
from punchgate.sync.store import Store
from tests.confirm.confirmer import Confirmer
from tests.support.broker import Broker
from tests.support.factories import make_punch
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_for_async
from tests.sync.helpers import make_settings, open_store, running
from tests.sync.test_drain_layouts import NO_BROKER, in_turns

BATCH = 50
DEVICES = [f"t{n:02d}" for n in range(30)]
PER_DEVICE = 200


@pytest.fixture
def confirmer(broker: Broker) -> Iterator[Confirmer]:
    consumer = Confirmer(broker.host, broker.port).start()
    yield consumer
    consumer.stop()


def unsent_reads(store: Store, limit: int, per_device: int) -> list[list[DeviceRows]]:
    """Every read of unsent rows the drain would make until none is left unread (one session)."""
    after, read_up_to = 0, dict[str, int]()
    reads: list[list[DeviceRows]] = []
    while True:
        groups, after = buffer_delivery.pending_per_device(
            store, limit, per_device, after=after, read_up_to=read_up_to, unsent=True
        )
        if not groups:
            return reads
        reads.append(groups)


def punch_messages(subscriber: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in subscriber.on("/punches")]


def test_unsent_reads_skip_sent_rows_and_carry_the_record_ids(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, NO_BROKER, delivery="central")
    store = open_store(settings)
    store.add_punches(in_turns(["a", "b", "c"], 12, 2))
    rows = store.pending_batch(100)
    # Rows sent before (a previous session's, unconfirmed) are re-sends' business, not the read's.
    sent = {rows[1].pk, rows[4].pk, rows[9].pk, rows[30].pk}
    assert store.mark_sent(sorted(sent)) == len(sent)
    reads = unsent_reads(store, limit=8, per_device=4)
    seen = [(g.device, pk, i) for groups in reads for g in groups for pk, i in zip(g.pks, g.ids, strict=True)]
    unsent = [(r.device, r.pk, record_id_of(r.payload)) for r in rows if r.pk not in sent]
    assert sorted(seen, key=lambda item: item[1]) == unsent  # each unsent row once, with its own id
    for device in "abc":
        pks = [pk for name, pk, _id in seen if name == device]
        assert pks == sorted(pks)
        sizes = [len(g.pks) for groups in reads for g in groups if g.device == device]
        assert all(size == 4 for size in sizes[:-1])  # whole reads of each terminal, its last one short
    store.close()


async def test_interleaved_backlog_goes_out_in_full_messages_each_row_confirmed_once(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, confirmer: Confirmer
) -> None:
    # 5 of each terminal in turn: a read of unsent rows in pk order would fill no message.
    punches = in_turns(DEVICES, PER_DEVICE, 5)
    assert len(DEVICES) * 5 * 2 < BATCH * READ_AHEAD_BATCHES < len(punches)
    settings = make_settings(tmp_path, broker.port, batch_size=BATCH, delivery="central", resend_after=60)
    store = open_store(settings)
    store.add_punches(punches)
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await wait_for_async(lambda: store.pending_count() == 0, timeout=60)
        assert forwarder.central is not None
        stats = forwarder.central.stats
    messages = punch_messages(subscriber)
    assert [len(m["records"]) for m in messages] == [BATCH] * (len(punches) // BATCH)
    for device in DEVICES:
        assert subscriber.reconciler.in_order(device, [p.id for p in punches if p.device == device])
        assert [m["device"] for m in messages].count(device) == PER_DEVICE // BATCH
    # Every row sent once, confirmed once, delivered by its confirmation.
    assert confirmer.seen == Counter({p.id: 1 for p in punches})
    assert stats.confirmed == len(punches) and stats.repeated == 0 and stats.unknown_ids == 0
    assert stats.resent == 0
    assert store.delivered_ids() == {p.id for p in punches}
    assert store.unconfirmed_count() == 0
    assert buffer_counts.recount_pending(store)
    store.close()


async def test_unconfirmed_rows_are_sent_again_and_only_a_confirmation_delivers(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, confirmer: Confirmer
) -> None:
    devices = DEVICES[:6]
    punches = in_turns(devices, 40, 3)
    settings = make_settings(tmp_path, broker.port, batch_size=20, delivery="central", resend_after=1)
    store = open_store(settings)
    store.add_punches(punches)
    confirmer.confirming = False
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        # Sent whole (20 records of one terminal a message), acknowledged, then held unconfirmed.
        assert await wait_for_async(lambda: len(confirmer.seen_ids()) == len(punches), timeout=60)
        first = punch_messages(subscriber)
        assert [len(m["records"]) for m in first[: len(punches) // 20]] == [20] * (len(punches) // 20)
        # Nobody confirmed: the broker's PUBACKs deliver nothing; the rows go out again.
        assert await wait_for_async(lambda: min(confirmer.seen.values()) >= 2, timeout=60)
        assert store.pending_count() == len(punches)
        confirmer.confirming = True
        confirmer.held.clear()
        assert await wait_for_async(lambda: store.pending_count() == 0, timeout=60)
        assert forwarder.central is not None
        assert forwarder.central.stats.resent >= len(punches)
    assert store.delivered_ids() == {p.id for p in punches}
    assert store.unconfirmed_count() == 0
    for device in devices:  # each send of a terminal's rows oldest first
        ids = [p.id for p in punches if p.device == device]
        assert subscriber.reconciler.in_order(device, ids)
    assert buffer_counts.recount_pending(store)
    store.close()


async def test_rows_stored_while_the_drain_runs_are_sent_and_confirmed(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, confirmer: Confirmer
) -> None:
    settings = make_settings(tmp_path, broker.port, batch_size=BATCH, delivery="central", resend_after=60)
    store = open_store(settings)
    store.add_punches(in_turns(DEVICES[:4], 60, 4))
    forwarder = Forwarder(settings, store, version="1.0")
    async with running(forwarder):
        assert await wait_for_async(lambda: store.pending_count() == 0, timeout=60)
        late = [make_punch(device, n) for n in range(60, 75) for device in DEVICES[:5]]
        await asyncio.to_thread(store.add_punches, late)
        forwarder.notify_new_punches()
        assert await wait_for_async(lambda: store.pending_count() == 0, timeout=60)
    everything = {*store.delivered_ids()}
    assert len(everything) == 4 * 60 + len(late)
    assert all(count == 1 for count in confirmer.seen.values()) and set(confirmer.seen) == everything
    assert buffer_counts.recount_pending(store)
    store.close()


def test_sent_and_confirm_marks_keep_the_counts_exact(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, NO_BROKER, delivery="central", buffer={"max_pending": 5000})
    store = open_store(settings)
    store.add_punches(in_turns(["a", "b"], 1200, 7))  # more rows than one 900-pk statement holds
    rows = store.pending_batch(5000)
    pks = [r.pk for r in rows]
    assert store.mark_sent(pks[:300]) == 300  # a previous send
    # A re-send's PUBACK and new rows' in one mark: only the new ones become unconfirmed.
    assert store.mark_sent(pks[:2000]) == 1700
    assert store.unconfirmed_count() == 2000
    confirmed = {r.pk for r in rows[100:2100]}  # 1900 sent, 100 never sent
    store.mark_delivered(pks[2100:2110])  # delivered before: changes nothing below
    done = store.confirm_pks([*sorted(confirmed), *pks[2100:2110]])
    assert (done.unconfirmed, done.unsent) == (1900, 100)
    assert done.devices == Counter(r.device for r in rows[100:2100])
    assert store.unconfirmed_count() == 100
    assert store.pending_count() == 2400 - 2010
    assert store.unconfirmed_count() == buffer_counts_unconfirmed(settings.buffer.path)
    assert buffer_counts.recount_pending(store)
    store.close()


def buffer_counts_unconfirmed(path: Path) -> int:
    """Sent, unconfirmed rows counted in the file by another connection."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(
            db.execute(
                "SELECT count(*) FROM punches WHERE delivered_at IS NULL AND sent_at IS NOT NULL"
            ).fetchone()[0]
        )
