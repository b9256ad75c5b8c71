"""Where a missing punch stopped, and the subscriber's bookkeeping."""

from __future__ import annotations

from tests.support.factories import make_punches
from tests.support.reconcile import Reconciler, where_it_stopped


def test_a_punch_never_stored_is_the_gateways_loss() -> None:
    assert where_it_stopped(False, None, crashes=[]) == "never stored by the gateway"


def test_a_punch_still_pending_is_reported_as_such() -> None:
    assert "still pending" in where_it_stopped(True, None, crashes=[100.0])


def test_an_ack_just_before_a_broker_crash_is_the_brokers_loss() -> None:
    where = where_it_stopped(True, 98.5, crashes=[50.0, 100.0])
    assert where.startswith("acknowledged by the broker 1.50 s before it was SIGKILLed")


def test_an_ack_far_from_any_crash_is_not_excused() -> None:
    where = where_it_stopped(True, 10.0, crashes=[100.0])
    assert where.startswith("acknowledged by the broker, never reached")


def test_reconciler_counts_duplicates_and_keeps_first_arrival_order() -> None:
    ids = [p.id for p in make_punches("door-1", 3)]
    rec = Reconciler()
    rec.add_batch({"device": "door-1", "seq": 1, "records": [{"id": ids[0]}, {"id": ids[1]}]})
    rec.add_batch({"device": "door-1", "seq": 2, "records": [{"id": ids[1]}, {"id": ids[2]}]})
    assert rec.in_order("door-1", ids)
    assert (rec.batches, rec.records, rec.duplicates) == (2, 4, 1)
    assert rec.seqs == {"door-1": [1, 2]}
    assert rec.missing(set(ids) | {"other"}) == {"other"}
