"""A buffer file full of pending punches, as a fleet's full reads leave it during an outage.

Punches are made the way the gateway makes them (`normalize_punch` over raw punches), one
terminal's log after another (each full read commits a terminal's records together), and
stored through the real `Store`. The file is then copied for each contender so all of them
start from the same bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

from punchgate.drivers.base import RawPunch
from punchgate.gateway.normalize import normalize_punch
from punchgate.sync.records import Punch
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store

_START = dt.datetime(2024, 3, 4, 6, 0, 0)
_ZONE = ZoneInfo("Europe/Berlin")


def terminal_log(device: str, count: int) -> list[Punch]:
    """`count` plausible, distinct punches of one terminal, 37 s apart."""
    serial = f"BENCH{device.upper()}"
    now = dt.datetime.now(dt.UTC)
    punches = []
    for n in range(count):
        raw = RawPunch(
            user_id=str(1 + n % 400),
            timestamp=_START + dt.timedelta(seconds=37 * n),
            state=(0, 1, 2, 3)[n % 4],
            verify=(1, 15, 2, 1)[n % 4],
            raw=n.to_bytes(4, "little"),
        )
        punches.append(
            normalize_punch(
                raw, device=device, serial_number=serial, zone=_ZONE, source="poll", historical=True, now=now
            )
        )
    return punches


def buffer_settings(path: Path) -> BufferSettings:
    return BufferSettings.model_validate({"path": path, "max_pending": 50_000_000, "min_free_disk_mb": 0})


def fill_buffer(path: Path, *, devices: int, per_device: int) -> int:
    """Create a buffer with devices × per_device pending punches; returns how many."""
    store = Store.open(buffer_settings(path))
    try:
        for d in range(devices):
            store.add_punches(terminal_log(f"t{d:03d}", per_device))
        return store.pending_count()
    finally:
        store.close()


def interleave_buffer(source: Path, target: Path, *, per_commit: int) -> Path:
    """A copy of a (closed) buffer with its punches in the order polling through an outage
    leaves them: `per_commit` punches of each terminal in turn, then the next ones of each.
    Same rows, same ids, new pks (insertion order is what "oldest first" follows)."""
    copy_buffer(source, target)
    columns = "id, device, user_id, utc_time, source, payload, raw, stored_at"
    with contextlib.closing(sqlite3.connect(target, isolation_level=None)) as db:
        db.execute("BEGIN")
        db.execute(f"CREATE TEMP TABLE held AS SELECT pk, {columns} FROM punches")
        db.execute("DELETE FROM punches")
        db.execute(
            f"INSERT INTO punches ({columns}) SELECT {columns} FROM ("
            f" SELECT *, (row_number() OVER (PARTITION BY device ORDER BY pk) - 1) / ? AS turn FROM held"
            ") ORDER BY turn, device, pk",
            (per_commit,),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return target


def copy_buffer(source: Path, target: Path) -> Path:
    """Copy a closed buffer file (its WAL was checkpointed when the store closed)."""
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(source) + suffix)
        if src.exists():
            shutil.copyfile(src, Path(str(target) + suffix))
    return target
