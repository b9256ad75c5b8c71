"""Central delivery in the buffer and in `CentralDelivery`, on real SQLite files: a punch is
delivered only when confirmed, by id (the truth) or by a remembered batch, whatever order,
repeats, restarts or re-sends happen in; junk is counted and ignored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from punchgate.gateway.settings import Settings
from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.confirmations_parse import parse_confirmation
from punchgate.sync.contract import Confirmation
from punchgate.sync.store import Store
from tests.support.factories import make_punches

GATEWAY = "gw-test"


def _settings(tmp_path: Path, **mqtt: object) -> Settings:
    return Settings.model_validate(
        {
            "gateway_id": GATEWAY,
            "mqtt": {"delivery": "central", "resend_after": 60, **mqtt},
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, "max_pending": 100},
        }
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.open(settings.buffer, gateway_id=GATEWAY)
    yield opened
    opened.close()


def confirm(ids: list[str] = (), batches: list[dict[str, object]] = (), **extra: object) -> bytes:  # type: ignore[assignment]
    return json.dumps(
        {
            "schema": "punchgate.confirm",
            "version": 1,
            "consumer": "test",
            "ids": list(ids),
            "batches": list(batches),
            **extra,
        }
    ).encode()


def test_sent_punches_stay_pending_and_count_against_the_limit_until_confirmed(store: Store) -> None:
    punches = make_punches("door-1", 10)
    store.add_punches(punches)
    rows = store.unsent_batch(100)
    assert [r.pk for r in rows] == sorted(r.pk for r in rows) and len(rows) == 10
    assert store.mark_sent([r.pk for r in rows[:6]]) == 6
    assert store.mark_sent([r.pk for r in rows[:6]]) == 0  # a second PUBACK: same rows, no new ones
    assert store.unconfirmed_count() == 6 and store.pending_count() == 10
    assert [r.pk for r in store.unsent_batch(100)] == [r.pk for r in rows[6:]]
    assert store.oldest_unconfirmed_age() is not None and store.oldest_unsent_age() is not None

    done = store.confirm_ids([p.id for p in punches[:3]] + [punches[8].id])  # one never marked sent
    assert (done.unconfirmed, done.unsent) == (3, 1)
    assert store.unconfirmed_count() == 3 and store.pending_count() == 6
    # Confirmed before its PUBACK was noted: the late mark leaves it delivered.
    assert store.mark_sent([rows[8].pk]) == 0 and store.pending_count() == 6
    assert store.confirm_ids([punches[0].id]).total == 0  # a repeat changes nothing


def test_counts_survive_a_restart_and_resends_are_claimed_once(settings: Settings) -> None:
    store = Store.open(settings.buffer, gateway_id=GATEWAY)
    punches = make_punches("door-1", 5)
    store.add_punches(punches)
    store.mark_sent([r.pk for r in store.unsent_batch(10)])
    store.close()

    store = Store.open(settings.buffer, gateway_id=GATEWAY)
    try:
        assert store.unconfirmed_count() == 5 and store.pending_count() == 5
        assert store.unsent_batch(10) == []  # nothing new to send: they wait for confirmation
        assert store.claim_resends(older_than=3600, limit=10) == []
        time.sleep(0.3)
        first = store.claim_resends(older_than=0.2, limit=3)
        assert [r.pk for r in first] == [r.pk for r in store.pending_batch(10)][:3]
        # Claimed: not handed out again until another timeout passes; the other two are.
        rest = store.claim_resends(older_than=0.2, limit=10)
        assert [r.pk for r in rest] == [r.pk for r in store.pending_batch(10)][3:]
        assert store.unconfirmed_count() == 5
        assert store.confirm_ids([p.id for p in punches]).unconfirmed == 5
        assert store.unconfirmed_count() == 0 and store.pending_count() == 0
    finally:
        store.close()


def test_a_replay_makes_confirmed_punches_unsent_again(store: Store) -> None:
    punches = make_punches("door-1", 4)
    store.add_punches(punches)
    store.mark_sent([r.pk for r in store.unsent_batch(10)])
    store.confirm_ids([p.id for p in punches])
    assert store.requeue_delivered(since=0) == 4
    assert len(store.unsent_batch(10)) == 4 and store.unconfirmed_count() == 0


def test_confirmations_by_id_and_batch_with_repeats_unknowns_and_junk(
    settings: Settings, store: Store
) -> None:
    central = CentralDelivery(settings.mqtt, store)
    punches = make_punches("door-1", 20)
    store.add_punches(punches)
    rows = central.next_rows(100, 0)
    pks = [r.pk for r in rows]
    central.remember_batch("door-1", 7, pks[:10])
    central.remember_batch("door-1", 8, pks[10:])
    store.mark_sent(pks)

    unknown = "f" * 32
    central.handle(confirm(ids=[punches[0].id, punches[1].id, punches[0].id, unknown]))
    central.handle(confirm(batches=[{"device": "door-1", "seq": 7, "count": 10}]))  # 0 and 1 again: harmless
    central.handle(confirm(batches=[{"device": "door-1", "seq": 8, "count": 9}]))  # wrong count: ignored
    central.handle(confirm(batches=[{"device": "door-1", "seq": 99, "count": 1}]))  # never sent
    central.handle(confirm(ids=[punches[1].id]))  # a repeat
    central.handle(confirm(ids=[p.id for p in punches[10:]], future_field={"x": 1}))  # later fields: ignored
    with capture_logs() as logs:
        for junk in (
            b"not json",
            b"[]",
            confirm(ids=["NOT-AN-ID"]),
            b'{"schema": "other", "version": 1}',
            confirm(version=2),
        ):
            central.handle(junk)
    stats = central.stats
    assert store.pending_count() == 0 and store.unconfirmed_count() == 0
    assert (stats.confirmed, stats.confirmed_batches) == (20, 1)
    assert (stats.repeated, stats.unknown_ids, stats.unknown_batches) == (1, 1, 2)
    assert stats.malformed == 5 and stats.messages == 11
    malformed = [e for e in logs if e["event"] == "confirmation_malformed"]
    assert len(malformed) == 5 and malformed[0]["payload"] == "not json"


def test_parse_is_lenient_with_additions_and_strict_with_what_it_reads() -> None:
    parsed = parse_confirmation(
        confirm(ids=["a" * 32], batches=[{"device": "d", "seq": 1, "count": 2, "extra": 1}])
    )
    assert isinstance(parsed, Confirmation) and parsed.ids == ["a" * 32] and parsed.batches[0].seq == 1
    for bad in (confirm(batches=[{"device": "d", "seq": 0, "count": 1}]), confirm(ids="abc")):  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            parse_confirmation(bad)


def test_resends_back_off_while_nobody_confirms(tmp_path: Path) -> None:
    settings = _settings(tmp_path, resend_after=1)
    store = Store.open(settings.buffer, gateway_id=GATEWAY)
    try:
        central = CentralDelivery(settings.mqtt, store)
        punches = make_punches("door-1", 3)
        store.add_punches(punches)
        store.mark_sent([r.pk for r in central.next_rows(10, 0)])
        central._next_scan = 0  # the scan is due now (it runs every few seconds at most)
        # Not due yet: sent just now.
        assert central.next_rows(10, 10**9) == []
        for wait, backoff in ((1, 1), (1, 2), (2, 4)):
            central._next_scan = 0
            time.sleep(wait + 0.05)
            assert len(central.next_rows(10, 10**9)) == 3
            assert central.stats.backoff == backoff
        central.handle(confirm(ids=[punches[0].id]))
        assert central.stats.backoff == 1 and central.stats.resent == 9
    finally:
        store.close()
