"""Central delivery's bookkeeping after a PUBACK, on a real SQLite buffer: acknowledged rows wait
a short grace for their confirmation before they are written as "sent", rows of this process are
confirmed by pk, and none of it ever delivers a row that no confirmation named; a forwarder that
stops (against a real mosquitto) leaves no acknowledged row unmarked."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from punchgate.gateway.settings import Settings
from punchgate.sync import confirmations_memory
from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.confirmations_memory import record_id_of
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import PendingRow, Store
from tests.support.broker import Broker
from tests.support.factories import make_punches
from tests.support.waiting import wait_for_async, wait_until
from tests.sync.helpers import make_settings, running

GATEWAY = "gw-test"


def _confirm(ids: list[str] = (), batches: list[dict[str, object]] = ()) -> bytes:  # type: ignore[assignment]
    body = {"schema": "punchgate.confirm", "version": 1, "consumer": "t", "ids": ids, "batches": batches}
    return json.dumps(body).encode()


def _marks(central_settings: Settings) -> dict[str, tuple[float | None, float | None]]:
    """id -> (sent_at, delivered_at), read as another process would."""
    with sqlite3.connect(f"file:{central_settings.buffer.path}?mode=ro", uri=True) as db:
        return {i: (s, d) for i, s, d in db.execute("SELECT id, sent_at, delivered_at FROM punches")}


def _send(central: CentralDelivery, rows: list[PendingRow], seq: int) -> list[int]:
    """What the drain does for one batch: remember its pks and ids."""
    pks = [r.pk for r in rows]
    central.remember_batch("door-1", seq, pks, [record_id_of(r.payload) for r in rows])
    return pks


def test_record_id_is_sliced_from_stored_records_and_parsed_otherwise(central_store: Store) -> None:
    punches = make_punches("door-1", 3)
    central_store.add_punches(punches)
    rows = central_store.unsent_batch(10)
    assert [record_id_of(r.payload) for r in rows] == [p.id for p in punches]
    # A record rendered another way (an older release, another key order) is parsed.
    assert record_id_of('{"serial":"X","id":"' + "a" * 32 + '"}') == "a" * 32
    assert record_id_of('{ "id": "' + "b" * 32 + '" }') == "b" * 32


def test_rows_confirmed_within_the_grace_are_written_once_the_rest_are_marked_sent(
    central_settings: Settings, central_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Room for a loaded machine between the PUBACK and the confirmation sent right after it.
    monkeypatch.setattr(confirmations_memory, "SENT_MARK_GRACE", 2.0)
    central = CentralDelivery(central_settings.mqtt, central_store)
    punches = make_punches("door-1", 10)
    central_store.add_punches(punches)
    pks = _send(central, central_store.unsent_batch(100), seq=1)
    # A confirmation may overtake the PUBACK's bookkeeping: the first three are confirmed first.
    central.submit(_confirm(ids=[p.id for p in punches[:3]]))
    wait_until(lambda: central_store.pending_count() == 7, timeout=10, message="7 pending")
    acked = time.monotonic()
    central.acked(pks)
    central.submit(_confirm(ids=[p.id for p in punches[3:6]]))  # within the grace
    wait_until(lambda: central_store.unconfirmed_count() == 4, timeout=10, message="4 unconfirmed")
    # The other four waited the grace for a confirmation that did not come.
    assert time.monotonic() - acked >= confirmations_memory.SENT_MARK_GRACE * 0.9
    marks = _marks(central_settings)
    for p in punches[:6]:
        sent_at, delivered_at = marks[p.id]
        assert delivered_at is not None and sent_at is None, p.id  # one write: confirmed
    for p in punches[6:]:
        sent_at, delivered_at = marks[p.id]
        assert sent_at is not None and delivered_at is None, p.id  # sent, unconfirmed, pending
    assert central_store.pending_count() == 4
    assert central.stats.confirmed == 6 and central.stats.unknown_ids == 0
    # Confirmed after their "sent" mark: delivered, and no longer counted as unconfirmed.
    central.handle(_confirm(ids=[p.id for p in punches[6:]]))
    assert central_store.pending_count() == 0 and central_store.unconfirmed_count() == 0
    assert central.stats.confirmed == 10 and central.stats.repeated == 0


def test_every_batch_acknowledged_while_others_wait_is_marked_sent_after_its_grace(
    central_settings: Settings, central_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first PUBACK wakes the writer (the later ones are never due sooner): each batch
    still gets its "sent" mark once its grace is over, none before."""
    monkeypatch.setattr(confirmations_memory, "SENT_MARK_GRACE", 0.3)
    central = CentralDelivery(central_settings.mqtt, central_store)
    central_store.add_punches(make_punches("door-1", 9))
    rows = central_store.unsent_batch(100)
    for seq, start in enumerate(range(0, 9, 3), start=1):
        central.acked(_send(central, rows[start : start + 3], seq=seq))
    last_acked = time.monotonic()
    wait_until(lambda: central_store.unconfirmed_count() == 9, timeout=10, message="all 9 marked sent")
    assert time.monotonic() - last_acked >= confirmations_memory.SENT_MARK_GRACE * 0.9
    assert central_store.pending_count() == 9  # sent, not delivered: no confirmation came


def test_rows_sent_again_after_a_restart_are_confirmed_with_their_unconfirmed_count(
    tmp_path: Path, central_store: Store
) -> None:
    """A re-send claims rows that carry a `sent_at` from the run before; confirming them must
    take them off the unconfirmed count too."""
    central_settings = Settings.model_validate(
        {
            "gateway_id": GATEWAY,
            "mqtt": {"delivery": "central", "resend_after": 1},
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, "max_pending": 1000},
        }
    )
    punches = make_punches("door-1", 5)
    central_store.add_punches(punches)
    central_store.mark_sent(
        [r.pk for r in central_store.unsent_batch(100)]
    )  # the run before: sent, unconfirmed
    assert central_store.unconfirmed_count() == 5
    central = CentralDelivery(central_settings.mqtt, central_store)  # this run
    due: list[PendingRow] = []

    def claimed() -> bool:
        due.extend(central.next_rows(100, 0))
        return len(due) == 5

    wait_until(claimed, timeout=10, message="the re-send claim")  # after resend_after, the scan claims them
    _send(central, due, seq=1)
    central.handle(_confirm(ids=[p.id for p in punches]))
    assert central_store.pending_count() == 0 and central_store.unconfirmed_count() == 0
    assert central.stats.confirmed == 5 and central.stats.resent == 5


def test_nothing_is_delivered_without_a_confirmation_naming_it(
    central_settings: Settings, central_store: Store
) -> None:
    central = CentralDelivery(central_settings.mqtt, central_store)
    punches = make_punches("door-1", 6)
    central_store.add_punches(punches)
    pks = _send(central, central_store.unsent_batch(100), seq=1)
    central.acked(pks)
    central.flush_sent()
    assert central_store.unconfirmed_count() == 6 and central_store.pending_count() == 6
    assert all(d is None for _s, d in _marks(central_settings).values())
    # Another gateway's ids and ids of rows not sent by this process change nothing here.
    central.handle(_confirm(ids=["e" * 32]))
    assert central_store.pending_count() == 6 and central.stats.unknown_ids == 1


def test_a_batch_confirmation_forgets_its_ids_so_a_later_id_is_a_repeat(
    central_settings: Settings, central_store: Store
) -> None:
    central = CentralDelivery(central_settings.mqtt, central_store)
    punches = make_punches("door-1", 4)
    central_store.add_punches(punches)
    _send(central, central_store.unsent_batch(100), seq=5)
    central.handle(_confirm(batches=[{"device": "door-1", "seq": 5, "count": 4}]))
    assert central_store.pending_count() == 0
    # Confirmed rows may be purged and their pks taken by new punches: an id confirmed again
    # later must not find the old pk, and must deliver nothing else.
    central_store.purge_delivered(older_than_days=0)
    newer = make_punches("door-2", 4)
    central_store.add_punches(newer)
    central.handle(_confirm(ids=[p.id for p in punches]))
    assert central_store.pending_count() == 4
    assert central.stats.confirmed == 4 and central.stats.unknown_ids == 4


async def test_a_stopping_forwarder_marks_what_waits_for_its_confirmation_sent(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody confirms; the grace is long: when the forwarder stops, every acknowledged row is
    marked sent (the next start re-sends it after the timeout) and none is delivered."""
    monkeypatch.setattr(confirmations_memory, "SENT_MARK_GRACE", 60.0)
    central_settings = make_settings(tmp_path, broker.port, delivery="central", batch_size=50)
    central_store = Store.open(central_settings.buffer)
    punches = make_punches("door-1", 120)
    central_store.add_punches(punches)
    forwarder = Forwarder(central_settings, central_store, version="t")
    try:
        async with running(forwarder):
            assert await wait_for_async(lambda: forwarder.stats.punches_published == 120, timeout=30)
            assert central_store.unconfirmed_count() == 0  # held: within the grace, nothing written yet
        assert central_store.unconfirmed_count() == 120 and central_store.pending_count() == 120
        marks = _marks(central_settings)
        assert all(s is not None and d is None for s, d in marks.values())
    finally:
        central_store.close()
