"""Confirmations are parsed in one thread and written in another (sync/confirmations.py,
sync/confirmations_parse.py): the next ones are parsed while the buffer write of the previous ones
waits or runs, and every confirmation is still written, exactly once, on a real SQLite file."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from punchgate.gateway.settings import Settings
from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.records import Punch
from punchgate.sync.store import Store
from tests.support.factories import make_punches
from tests.support.waiting import wait_until

GATEWAY = "gw-test"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    settings = _settings(tmp_path)
    opened = Store.open(settings.buffer, gateway_id=GATEWAY)
    yield opened
    opened.close()


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "gateway_id": GATEWAY,
            "mqtt": {"delivery": "central", "resend_after": 60},
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, "max_pending": 1000},
        }
    )


def _sent(tmp_path: Path, store: Store, count: int) -> tuple[CentralDelivery, list[Punch]]:
    """`count` punches of one terminal stored, read and published as one remembered batch."""
    central = CentralDelivery(_settings(tmp_path).mqtt, store)
    punches = make_punches("door-1", count)
    store.add_punches(punches)
    rows = central.next_rows(100, 0)
    central.remember_batch("door-1", 1, [r.pk for r in rows], [p.id for p in punches])
    return central, punches


def _confirm(ids: list[str]) -> bytes:
    return json.dumps({"schema": "punchgate.confirm", "version": 1, "consumer": "t", "ids": ids}).encode()


def test_confirmations_are_parsed_while_the_write_before_them_waits(tmp_path: Path, store: Store) -> None:
    central, punches = _sent(tmp_path, store, 30)
    ids = [p.id for p in punches]
    with store._write_lock:  # the buffer's writer is busy: the first write cannot finish
        central.submit(_confirm(ids[:10]))
        wait_until(lambda: central._writing, timeout=10, message="the first write started")
        central.submit(_confirm(ids[10:20]))
        central.submit(_confirm([*ids[20:], "f" * 32]))  # one id that is not ours
        # Parsed and taken meanwhile, waiting for the writer: none of them written yet.
        wait_until(
            lambda: not central._queue and not central._parsing and len(central._taken) >= 1,
            timeout=10,
            message="the next confirmations parsed while the write waited",
        )
        assert store.pending_count() == 30 and not central.idle()
    wait_until(central.idle, timeout=10, message="every confirmation written")
    assert store.pending_count() == 0
    assert central.stats.confirmed == 30 and central.stats.unknown_ids == 1
    assert central.stats.messages == 3 and central.stats.errors == 0


def test_a_malformed_confirmation_between_good_ones_is_counted_and_the_rest_written(
    tmp_path: Path, store: Store
) -> None:
    central, punches = _sent(tmp_path, store, 4)
    central.submit(_confirm([punches[0].id, punches[1].id]))
    central.submit(b'{"schema": "punchgate.confirm", "version": 1, "ids": ["not-an-id"]}')
    central.submit(_confirm([punches[2].id, punches[3].id]))
    wait_until(lambda: central.idle() and store.pending_count() == 0, timeout=10, message="all written")
    assert central.stats.malformed == 1 and central.stats.messages == 3
    assert central.stats.confirmed == 4 and central.stats.errors == 0


def test_a_failure_while_taking_ids_is_counted_and_the_next_confirmations_still_go_through(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    central, punches = _sent(tmp_path, store, 4)
    take_counted = central._sent_ids.take_counted
    calls = 0

    def fails_once(ids: Sequence[str]) -> tuple[list[int], list[int], list[str], Counter[str] | None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return take_counted(ids)

    monkeypatch.setattr(central._sent_ids, "take_counted", fails_once)
    central.submit(_confirm([punches[0].id]))
    wait_until(
        lambda: central.stats.errors == 1 and central.idle(), timeout=10, message="the failure counted"
    )
    central.submit(_confirm([p.id for p in punches[1:]]))
    wait_until(lambda: central.idle() and store.pending_count() == 1, timeout=10, message="the rest written")
    assert central.stats.confirmed == 3 and central.stats.errors == 1
