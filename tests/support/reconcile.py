"""Reconciling what the central system received against what the terminals produced.

`Reconciler` is the bookkeeping of a subscriber (ids, order, duplicates); `buffer_rows` and
`delivery_marks` read the gateway's SQLite buffer read-only (it may be in use by a running
gateway); `where_it_stopped` says, for a punch that never arrived, which side lost it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A broker crash can only take messages it acknowledged shortly before: the gateway marks a
# batch delivered right after its PUBACK, so delivered_at sits just before (or, for the last
# marks flushed on disconnect, just after) the crash.
CRASH_WINDOW_BEFORE = 10.0
CRASH_WINDOW_AFTER = 3.0


@dataclass
class Reconciler:
    """Pure bookkeeping: which record ids arrived, in which order per device, how many twice."""

    seen: set[str] = field(default_factory=set)
    order: dict[str, list[str]] = field(default_factory=dict)  # device -> ids in first-arrival order
    seqs: dict[str, list[int]] = field(default_factory=dict)  # device -> batch seq numbers as received
    duplicates: int = 0
    batches: int = 0
    records: int = 0

    def add_batch(self, batch: dict[str, Any]) -> None:
        device = batch["device"]
        self.batches += 1
        self.seqs.setdefault(device, []).append(batch["seq"])
        order = self.order.setdefault(device, [])
        for record in batch["records"]:
            self.records += 1
            if record["id"] in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(record["id"])
                order.append(record["id"])

    def missing(self, expected: set[str]) -> set[str]:
        return expected - self.seen

    def in_order(self, device: str, expected: list[str]) -> bool:
        """True when this device's ids first arrived exactly in the expected order."""
        return self.order.get(device, []) == expected


def _read_only(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30))


def buffer_rows(path: Path) -> tuple[int, int]:
    """(rows, distinct ids) in the gateway's SQLite buffer."""
    with _read_only(path) as db:
        rows, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM punches").fetchone()
    return int(rows), int(distinct)


def held_ids(path: Path) -> set[str]:
    """Every record id the buffer holds: in the outbox or staged (sync/buffer_staging.py)."""
    with _read_only(path) as db:
        rows = db.execute("SELECT id FROM punches UNION SELECT id FROM staged_punches").fetchall()
    return {str(ident) for (ident,) in rows}


def staged_rows(path: Path) -> int:
    """Staged punches not moved into the outbox yet."""
    with _read_only(path) as db:
        return int(db.execute("SELECT count(*) FROM staged_punches").fetchone()[0])


def pending_count(path: Path) -> int:
    """Punches in the buffer not yet acknowledged by the broker."""
    with _read_only(path) as db:
        return int(db.execute("SELECT count(*) FROM punches WHERE delivered_at IS NULL").fetchone()[0])


def delivery_marks(path: Path, ids: Iterable[str]) -> dict[str, float | None]:
    """delivered_at (None: still pending) of those ids the buffer holds; absent ids are left out."""
    wanted = list(ids)
    if not wanted or not path.exists():
        return {}
    found: dict[str, float | None] = {}
    with _read_only(path) as db:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for record_id, delivered_at in db.execute(
                f"SELECT id, delivered_at FROM punches WHERE id IN ({marks})", chunk
            ):
                found[record_id] = delivered_at
    return found


def where_it_stopped(stored: bool, delivered_at: float | None, crashes: list[float]) -> str:
    """Where a punch the subscriber never received stopped, from the gateway buffer's view.

    `crashes` are the wall-clock times the broker was SIGKILLed. A punch the broker
    acknowledged just before such a crash is the broker's loss (the text then starts with
    "acknowledged by the broker" and a number of seconds); anything else is the gateway's.
    """
    if not stored:
        return "never stored by the gateway"
    if delivered_at is None:
        return "stored, still pending in the buffer at the end"
    for crash in crashes:
        if crash - CRASH_WINDOW_BEFORE <= delivered_at <= crash + CRASH_WINDOW_AFTER:
            return f"acknowledged by the broker {crash - delivered_at:.2f} s before it was SIGKILLed"
    return "acknowledged by the broker, never reached the subscriber (no broker crash near)"
