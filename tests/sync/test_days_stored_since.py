"""`days_stored_since`, which tells the digest publisher which terminal-days new punches changed,
answers from a real buffer file what its rows say (one group per terminal and local day)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
from pathlib import Path

from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punch


def _expected(path: Path, after: int) -> tuple[dict[str, set[str]], int]:
    """Row by row, in Python, from the payloads as stored."""
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT pk, device, payload FROM punches WHERE pk > ?", (after,)).fetchall()
    changed: dict[str, set[str]] = {}
    for _pk, device, payload in rows:
        changed.setdefault(device, set()).add(json.loads(payload)["local_time"][:10])
    return changed, max([after, *(pk for pk, _d, _p in rows)])


def test_days_stored_since_names_each_terminal_day_and_the_newest_pk(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = Store.open(BufferSettings.model_validate({"path": path, "min_free_disk_mb": 0}), gateway_id="gw")
    try:
        start = dt.datetime(2024, 3, 1, 22, 0)
        for part in range(3):
            punches = [
                dataclasses.replace(
                    make_punch(f"door-{n % 3}", part * 1000 + n),
                    local_time=start + dt.timedelta(hours=(part * 1000 + n) * 0.37),
                )
                for n in range(1000)
            ]
            store.add_punches(punches)
        for after in (0, 1, 999, 1000, 2500, 3000, 5000):
            changed, top = store.days_stored_since(after)
            assert (changed, top) == _expected(path, after), after
        changed, top = store.days_stored_since(1000)
        assert top == 3000
        assert set(changed) == {"door-0", "door-1", "door-2"}
        assert len(changed["door-0"]) > 10  # many days, so grouping had something to do
        assert store.days_stored_since(3000) == ({}, 3000)
    finally:
        store.close()
