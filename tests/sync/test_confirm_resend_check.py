"""The re-send scan of central delivery reads before it claims (`buffer_delivery.any_resend_due`):
a scan that finds nothing due takes no write transaction, so it never waits for the buffer's
writer in the drain's read path; one that finds rows due claims them as before. Real SQLite."""

from __future__ import annotations

import threading

from punchgate.gateway.settings import Settings
from punchgate.sync import buffer_delivery
from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.store import PendingRow, Store
from tests.support.factories import make_punches


def _scan_now(central: CentralDelivery) -> list[PendingRow]:
    central._next_scan = 0.0  # the scan is due at this read
    return central.next_rows(100, 0)


def test_any_resend_due_matches_what_a_claim_finds(central_store: Store) -> None:
    central_store.add_punches(make_punches("door-1", 5))
    assert not buffer_delivery.any_resend_due(central_store, 0)  # nothing sent: nothing to send again
    central_store.mark_sent([r.pk for r in central_store.unsent_batch(2)])
    assert not buffer_delivery.any_resend_due(central_store, 3600)  # sent just now: not due for an hour
    assert buffer_delivery.any_resend_due(central_store, 0)
    assert len(central_store.claim_resends(older_than=0, limit=10)) == 2


def test_a_scan_that_finds_nothing_due_does_not_wait_for_the_writer(
    central_settings: Settings, central_store: Store
) -> None:
    punches = make_punches("door-1", 4)
    central_store.add_punches(punches)
    central_store.mark_sent(
        [r.pk for r in central_store.unsent_batch(2)]
    )  # sent now: due only after resend_after
    central = CentralDelivery(central_settings.mqtt, central_store)
    got: list[list[PendingRow]] = []
    with central_store._write_lock:  # the writer is busy (a long confirmation round)
        reader = threading.Thread(target=lambda: got.append(_scan_now(central)))
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "the scan waited for the write lock"
    assert [r.pk for r in got[0]] == [r.pk for r in central_store.unsent_batch(100)]  # the unsent rows
    assert central.stats.resent == 0


def test_a_scan_with_rows_due_claims_them(central_settings: Settings, central_store: Store) -> None:
    central_store.add_punches(make_punches("door-1", 4))
    sent = [r.pk for r in central_store.unsent_batch(3)]
    central_store.mark_sent(sent)
    central = CentralDelivery(central_settings.mqtt.model_copy(update={"resend_after": 0.0}), central_store)
    due = _scan_now(central)
    assert [r.pk for r in due] == sent and central.stats.resent == 3
    assert central_store.unconfirmed_count() == 3  # claimed: still sent, unconfirmed
