"""A buffer and gateway settings for make-up punch tests, without a daemon."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from punchgate.gateway.manual_records import new_entry, punch_builder
from punchgate.gateway.settings import Settings
from punchgate.sync.manual import ManualEntry
from punchgate.sync.store import Store

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
SERIAL = "CKJT2034"


def settings(tmp_path: Path, **manual: Any) -> Settings:
    return Settings.model_validate(
        {
            "gateway_id": "gw-test",
            "timezone": "Europe/Berlin",
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0},
            "manual": manual,
            "terminals": [{"type": "zk", "name": "door-1", "host": "192.0.2.10"}],
        }
    )


def open_store(config: Settings) -> Store:
    store = Store.open(config.buffer, gateway_id=config.gateway_id)
    store.set_device_meta("door-1", {"serial_number": SERIAL})
    return store


def body(**changes: Any) -> dict[str, Any]:
    return {
        "device": "door-1",
        "user_id": "1017",
        "local_time": "2026-03-09T08:00:00",
        "state": "check_in",
        "reason_code": "forgot_to_punch",
        "reason": "badge left at home",
        "entered_by": "Alice",
        **changes,
    }


def enter(store: Store, config: Settings, *, now: dt.datetime = NOW, **changes: Any) -> ManualEntry:
    entry = new_entry(
        config,
        lambda device: store.get_device_meta(device).get("serial_number", ""),
        body(**changes),
        now=now,
    )
    return store.add_manual(entry, config.manual, punch_builder(config))


def decide(
    store: Store, config: Settings, entry_id: str, *, approve: bool = True, by: str = "Bob"
) -> ManualEntry:
    return store.decide_manual(
        entry_id,
        approve=approve,
        by=by,
        note=None if approve else "not at work that day",
        settings=config.manual,
        punch=punch_builder(config),
    )
