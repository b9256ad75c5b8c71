"""A restarted gateway reads a terminal's roster only once the stored one is `refresh_hours`
old (gateway/roster.py `first_refresh_in`), against a real buffer file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from punchgate.drivers.base import TerminalUser
from punchgate.gateway.roster import first_refresh_in, roster_key, roster_meta
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
DAY = 24 * 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(
        BufferSettings.model_validate({"path": str(tmp_path / "b.db"), "min_free_disk_mb": 0})
    )
    yield opened
    opened.close()


def _stored(store: Store, at: dt.datetime) -> None:
    users = [TerminalUser(user_id="1", name="Ann")]
    store.set_device_meta(roster_key("door"), roster_meta(users, "S1", at))


def test_no_stored_roster_is_due_at_once(store: Store) -> None:
    assert first_refresh_in(store, "door", DAY, NOW) == 0.0


def test_a_recent_roster_waits_out_the_rest_of_its_interval(store: Store) -> None:
    _stored(store, NOW - dt.timedelta(hours=6))
    assert first_refresh_in(store, "door", DAY, NOW) == pytest.approx(18 * 3600)


def test_an_old_roster_is_due_at_once(store: Store) -> None:
    _stored(store, NOW - dt.timedelta(days=2))
    assert first_refresh_in(store, "door", DAY, NOW) == 0.0


def test_a_roster_from_the_future_waits_one_interval_at_most(store: Store) -> None:
    _stored(store, NOW + dt.timedelta(days=5))  # the gateway's clock was wrong when it was stored
    assert first_refresh_in(store, "door", DAY, NOW) == DAY


def test_an_unreadable_time_is_due_at_once(store: Store) -> None:
    store.set_device_meta(roster_key("door"), {"refreshed_at": "yesterday", "users": {}})
    assert first_refresh_in(store, "door", DAY, NOW) == 0.0


def test_every_terminals_meta_is_read_in_one_go(store: Store) -> None:
    """What a fleet's start-up reads instead of two queries a terminal (`Store.all_device_meta`)."""
    _stored(store, NOW)
    store.set_device_meta("door", {"serial_number": "S1", "record_count": 3})
    found = store.all_device_meta()
    assert found["door"] == store.get_device_meta("door") == {"serial_number": "S1", "record_count": 3}
    # Of a roster only its date: a fleet's user lists parsed at once were a start-up peak of
    # ~93 MiB at 1,000 terminals.
    assert found[roster_key("door")] == {"refreshed_at": "2026-11-30T12:00:00Z"}
    assert "users" in store.get_device_meta(roster_key("door"))
    assert set(found) == {"door", roster_key("door")}
