"""Reconciliation digests from a real buffer: the recipe, the window, changes, the rate limit."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import event

from punchgate.gateway.settings import Settings
from punchgate.sync.contract import day_digest
from punchgate.sync.digests import DigestPublisher, window
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store
from tests.support.factories import make_punch
from tests.support.schemas import validate


def _settings(tmp_path: Path, **buffer: Any) -> Settings:
    return Settings.model_validate(
        {
            "gateway_id": "gw-test",
            "mqtt": {"digest_interval": 3600},
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, **buffer},
        }
    )


def test_the_recipe_is_the_documented_one() -> None:
    ids = ["b" * 32, "a" * 32, "b" * 32]
    text = "a" * 32 + "\n" + "b" * 32
    assert day_digest(ids) == hashlib.sha256(text.encode()).hexdigest()


def test_the_window_holds_only_whole_days() -> None:
    today = dt.date(2024, 3, 4)
    assert window(today, 90) == (dt.date(2023, 12, 7), dt.date(2024, 3, 5))
    assert window(today, 2) == (today, dt.date(2024, 3, 5))
    assert window(today, 1) is None
    first, last = window(today, 3650) or (today, today)
    assert (last - first).days + 1 == 92


def test_digests_follow_the_buffer_per_local_day(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    today = [dt.date(2024, 3, 4)]
    try:
        publisher = DigestPublisher(
            settings,
            store,
            Forwarder(settings, store, version="test"),
            ["door-1", "door-2"],
            today=lambda: today[0],
        )
        # Local 2024-03-04 07:00:00 onwards, one per second; n=90000 falls on the next local day.
        early = [make_punch("door-1", n) for n in (0, 1, 2)]
        store.add_punches(early)
        first = {topic: json.loads(payload) for topic, payload in publisher.tick()}
        # Punches stored before the publisher's first look count too: its first tick reads every day.
        assert set(first) == {
            "punchgate/gw-test/devices/door-1/digests",
            "punchgate/gw-test/devices/door-2/digests",
        }
        door1 = first["punchgate/gw-test/devices/door-1/digests"]
        validate("strict/device-digests", door1)
        assert door1["days"] == [
            {"day": "2024-03-04", "count": 3, "digest": day_digest([p.id for p in early])}
        ]
        assert (door1["first_day"], door1["last_day"]) == ("2023-12-07", "2024-03-05")
        assert first["punchgate/gw-test/devices/door-2/digests"]["days"] == []

        # Rate-limited: a new punch is noted, published once the interval has passed.
        late = make_punch("door-1", 90000)
        store.add_punches([late])
        assert publisher.tick() == []
        publisher.interval = 0
        ((topic, payload),) = publisher.tick()
        days = json.loads(payload)["days"]
        assert [d["day"] for d in days] == ["2024-03-04", "2024-03-05"] and days[1]["count"] == 1

        # A new day moves the window: every terminal again, days beyond it gone.
        today[0] = dt.date(2024, 6, 3)
        moved = {t: json.loads(p) for t, p in publisher.tick()}
        assert len(moved) == 2 and moved[topic]["days"] == [] and moved[topic]["last_day"] == "2024-06-04"
    finally:
        store.close()


def test_a_terminals_changed_days_are_read_in_one_query(tmp_path: Path) -> None:
    """The first tick covers every day of the window for every terminal: one query each, not
    one per day (500 terminals x 89 days were 44,500 queries at every start)."""
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    try:
        devices = [f"door-{n}" for n in range(5)]
        # Over three local days, including punches around local midnight.
        punches = [
            make_punch(device, n) for device in devices[:3] for n in (0, 60_000, 61_000, 90_000, 170_000)
        ]
        store.add_punches(punches)
        publisher = DigestPublisher(
            settings,
            store,
            Forwarder(settings, store, version="test"),
            devices,
            today=lambda: dt.date(2024, 3, 4),
        )
        statements: list[str] = []

        def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "json_extract" in statement and "GROUP BY" not in statement:
                statements.append(statement)

        event.listen(store._engine, "before_cursor_execute", note)
        try:
            messages = {topic: json.loads(payload) for topic, payload in publisher.tick()}
        finally:
            event.remove(store._engine, "before_cursor_execute", note)
        assert len(statements) == len(devices), statements
        for device in devices:
            mine = [p for p in punches if p.device == device]
            by_day: dict[str, list[str]] = {}
            for punch in mine:
                by_day.setdefault(punch.local_time.date().isoformat(), []).append(punch.id)
            expected = [
                {"day": day, "count": len(ids), "digest": day_digest(ids)}
                for day, ids in sorted(by_day.items())
                if day <= "2024-03-05"  # the window's last day: tomorrow
            ]
            assert messages[f"punchgate/gw-test/devices/{device}/digests"]["days"] == expected
        assert len(messages["punchgate/gw-test/devices/door-0/digests"]["days"]) == 2
    finally:
        store.close()
