"""What the digest publisher keeps between messages: small per day, and the messages unchanged."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from punchgate.gateway.settings import Settings
from punchgate.sync import digests
from punchgate.sync.contract import DeviceDigests, DigestDay, day_digest
from punchgate.sync.digests import DigestPublisher, entry_json
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store
from tests.support.factories import make_punch

DAY = 86_400  # make_punch: one second a step, from local 2024-03-04 07:00
TODAY = dt.date(2024, 4, 2)


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "gateway_id": "gw-test",
            "mqtt": {"digest_interval": 3600},
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0},
        }
    )


def _deep_size(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of `value` and everything it holds (containers, instance dicts), each object once."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        size += sum(_deep_size(item, seen) for item in value)
    for attribute in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
        held = getattr(value, attribute, None)
        if held is not None and not isinstance(value, type):
            size += _deep_size(held, seen)
    return size


@pytest.mark.parametrize("spliced", [True, False], ids=["kept-entries-spliced", "models-rebuilt"])
def test_a_month_of_days_is_kept_small_and_published_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spliced: bool
) -> None:
    """The kept entries go into the envelope the model writes; should `days` ever not be its
    last field, the days are rebuilt as models instead. Either way the same bytes."""
    if not spliced:
        monkeypatch.setattr(digests, "_NO_DAYS", b"no envelope ends like this")
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    try:
        # 30 local days (2024-03-04 .. 2024-04-02), three punches each, one terminal.
        punches = [make_punch("door-1", day * DAY + n) for day in range(30) for n in (0, 60, 120)]
        store.add_punches(punches)
        publisher = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), ["door-1"], today=lambda: TODAY
        )
        ((_topic, payload),) = publisher.tick()

        # The message is the one the payload model writes from validated days, byte for byte.
        sent = json.loads(payload)
        by_day: dict[str, list[str]] = {}
        for punch in punches:
            by_day.setdefault(punch.local_time.date().isoformat(), []).append(punch.id)
        expected = DeviceDigests.model_validate(
            {
                "schema": "punchgate.digests",
                "version": 1,
                "scheme": 1,
                "gateway": "gw-test",
                "device": "door-1",
                "as_of": dt.datetime.fromisoformat(sent["as_of"].replace("Z", "+00:00")),
                "first_day": sent["first_day"],
                "last_day": sent["last_day"],
                "days": [
                    DigestDay(day=day, count=len(ids), digest=day_digest(ids))
                    for day, ids in sorted(by_day.items())
                ],
            }
        )
        assert len(sent["days"]) == 30
        assert payload == expected.model_dump_json(by_alias=True).encode()
        # The splice applies to today's model (else both cases took the rebuilt path).
        no_days = expected.model_copy(update={"days": []}).model_dump_json(by_alias=True).encode()
        assert no_days.endswith(digests._NO_DAYS) is spliced

        # What it keeps until the next message: 40 bytes a day in one object, not a model's ~700.
        kept = publisher._days["door-1"]
        assert len(kept) == 30 * 40
        assert _deep_size(kept) / 30 < 45, _deep_size(kept) / 30
        # The next message, from what it kept and today's new punch, is the model's too.
        store.add_punches([make_punch("door-1", 29 * DAY + 180)])
        publisher.interval = 0
        ((_topic, again),) = publisher.tick()
        days = json.loads(again)["days"]
        assert days[:29] == sent["days"][:29] and days[29]["count"] == 4
    finally:
        store.close()


def test_a_tick_over_its_budget_leaves_the_rest_to_the_next_ticks(tmp_path: Path) -> None:
    """The first tick recomputes every terminal: past the budget, the rest go out in the next
    ticks, the longest unpublished first, every terminal once."""
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    try:
        devices = [f"door-{n}" for n in range(5)]
        store.add_punches([make_punch(device, n) for device in devices for n in (0, 60)])
        publisher = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), devices, today=lambda: TODAY
        )
        publisher.budget = 0.0  # one message a tick
        published = [
            [json.loads(payload)["device"] for _topic, payload in publisher.tick()] for _ in range(6)
        ]
        assert published == [[d] for d in devices] + [[]]
        # A new punch of a terminal sent before the others: it waits its interval as before.
        publisher.interval = 0
        store.add_punches([make_punch("door-0", 120)])
        assert [json.loads(p)["device"] for _t, p in publisher.tick()] == ["door-0"]
        publisher.budget = 60.0  # within the budget: every terminal due in one tick
        store.add_punches([make_punch(device, 180) for device in devices])
        assert sorted(json.loads(p)["device"] for _t, p in publisher.tick()) == devices
    finally:
        store.close()


def test_terminals_waiting_for_their_first_message_hold_no_days(tmp_path: Path) -> None:
    """A start (or a new day) recomputes every day of every terminal's window, over many ticks
    at a large site. Until its turn a terminal holds no set of days: a set of the window's 88
    dates each was 40 MB for 5,000 terminals. Its message, when its turn comes, still covers
    every day of the window, and a day it punched on since waits as before."""
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    try:
        devices = [f"door-{n}" for n in range(200)]
        # door-199 punched on the first and on the last day of the window.
        store.add_punches([make_punch("door-199", 0), make_punch("door-199", 29 * DAY)])
        publisher = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), devices, today=lambda: TODAY
        )
        publisher.budget = 0.0  # one message a tick: 199 terminals wait
        publisher.tick()
        waiting = sum(_deep_size(publisher._dirty[d]) for d in devices if d in publisher._dirty)
        assert len(publisher._dirty) == 199 and waiting / 199 < 250, waiting / 199
        store.add_punches([make_punch("door-199", 29 * DAY + 60)])
        publisher.budget = 60.0
        sent = {json.loads(p)["device"]: json.loads(p) for _t, p in publisher.tick()}
        assert len(sent) == 199 and "door-0" not in sent
        days = {d["day"]: d["count"] for d in sent["door-199"]["days"]}
        assert days == {"2024-03-04": 1, "2024-04-02": 2}
        assert all(not m["days"] for device, m in sent.items() if device != "door-199")
    finally:
        store.close()


def _digests_by_device(messages: list[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    sent = {}
    for _topic, payload in messages:
        message = json.loads(payload)
        message.pop("as_of")
        sent[message["device"]] = message
    return sent


def test_a_restart_recomputes_only_the_days_changed_since_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop keeps each terminal's days (`kept`, written to the device meta); the next start
    takes them back for the same window and recomputes only the days of punches stored since,
    and every terminal's message goes out again, the same as a fresh computation's."""
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    try:
        devices = ["door-1", "door-2", "door-3"]
        store.add_punches(
            [make_punch(d, day * DAY + n) for d in devices for day in (0, 5, 20) for n in (0, 60)]
        )
        first = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), devices, today=lambda: TODAY
        )
        before = _digests_by_device(first.tick())
        store.set_device_metas(first.kept())
        assert "door-1/digests" not in store.all_device_meta(), "a start-up reads the kept days for nothing"

        store.add_punches([make_punch("door-1", 20 * DAY + 120), make_punch("door-2", 25 * DAY)])
        asked: list[tuple[str, set[dt.date]]] = []
        days_ids = store.days_ids

        def counted(device: str, days: set[dt.date]) -> dict[dt.date, list[str]]:
            asked.append((device, set(days)))
            return days_ids(device, days)

        monkeypatch.setattr(store, "days_ids", counted)
        restarted = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), devices, today=lambda: TODAY
        )
        after = _digests_by_device(restarted.tick())
        recomputed = {device: days for device, days in asked if days}
        assert recomputed == {"door-1": {dt.date(2024, 3, 24)}, "door-2": {dt.date(2024, 3, 29)}}
        assert after["door-3"] == before["door-3"]
        monkeypatch.undo()
        store.set_device_metas({f"{d}/digests": {} for d in devices})  # nothing kept: all anew
        fresh = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), devices, today=lambda: TODAY
        )
        assert after == _digests_by_device(fresh.tick())
    finally:
        store.close()


def _two_days_of_door_1(settings: Settings, store: Store) -> DigestPublisher:
    """Two punches of door-1, twenty days apart, and a publisher for it on TODAY."""
    store.add_punches([make_punch("door-1", 0), make_punch("door-1", 20 * DAY)])
    return DigestPublisher(
        settings, store, Forwarder(settings, store, version="test"), ["door-1"], today=lambda: TODAY
    )


def test_days_kept_for_another_window_are_computed_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    try:
        first = _two_days_of_door_1(settings, store)
        first.tick()
        store.set_device_metas(first.kept())
        asked: list[str] = []
        days_ids = store.days_ids

        def counted(device: str, days: set[dt.date]) -> dict[dt.date, list[str]]:
            asked.append(device)
            return days_ids(device, days)

        monkeypatch.setattr(store, "days_ids", counted)
        next_day = TODAY + dt.timedelta(days=1)
        later = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), ["door-1"], today=lambda: next_day
        )
        ((_topic, payload),) = later.tick()
        assert asked == ["door-1"] and len(json.loads(payload)["days"]) == 2
    finally:
        store.close()


@pytest.mark.parametrize(
    ("day", "count", "digest"),
    [("2024-03-04", 1, "0" * 64), ("1999-12-31", 4_000_000_000, "ab" * 32), ("2099-01-09", 37, "f" * 64)],
)
def test_a_kept_day_is_written_as_the_payload_model_writes_it(day: str, count: int, digest: str) -> None:
    ordinal = dt.date.fromisoformat(day).toordinal()
    assert entry_json(ordinal, count, bytes.fromhex(digest)) == (
        DigestDay(day=day, count=count, digest=digest).model_dump_json().encode()
    )


@pytest.mark.parametrize(
    "kept",
    [
        {"days": "zz"},  # not hex
        {"days": "00" * 39},  # not a whole number of days
        {"after": -1},
        {"after": 10**9},  # past anything this buffer holds
        {"after": "3"},
        {"days": 7},
    ],
    ids=["not-hex", "cut-day", "negative-after", "after-past-buffer", "after-text", "days-number"],
)
def test_kept_days_that_do_not_hold_up_are_computed_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: dict[str, Any]
) -> None:
    """A kept row is the buffer's own, but a damaged one must not become a wrong digest: the
    terminal's days are computed anew, and its message is a fresh computation's."""
    settings = _settings(tmp_path)
    store = Store.open(settings.buffer)
    try:
        first = _two_days_of_door_1(settings, store)
        expected = _digests_by_device(first.tick())
        good = first.kept()
        store.set_device_metas({"door-1/digests": {**good["door-1/digests"], **kept}})
        asked: list[int] = []  # how many days each query asked for
        days_ids = store.days_ids

        def counted(device: str, days: set[dt.date]) -> dict[dt.date, list[str]]:
            asked.append(len(days))
            return days_ids(device, days)

        monkeypatch.setattr(store, "days_ids", counted)
        later = DigestPublisher(
            settings, store, Forwarder(settings, store, version="test"), ["door-1"], today=lambda: TODAY
        )
        assert _digests_by_device(later.tick()) == expected
        assert len(asked) == 1 and asked[0] > 30, asked  # every day of the window
    finally:
        store.close()
