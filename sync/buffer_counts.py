"""The pending counts the store keeps in memory, in total and per device.

They are counted in the table once, at open, and from then on changed by exactly the rows each
committed statement inserted or changed, so `/metrics`, `/api/devices` and `punchgate status`
never count the table. Kept apart from `store.py` because it is the one place that must keep
the total (`Limits.pending`) and the per-device counts in step, under `_counts_lock`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from punchgate.sync import buffer_outbox

if TYPE_CHECKING:
    from punchgate.sync.store import Store

# The store's logger: these lines are the store's, wherever the code sits.
log = structlog.get_logger("punchgate.sync.store")


def set_pending_counts(store: Store, by_device: Mapping[str, int]) -> None:
    with store._counts_lock:
        store._pending_by_device = {device: count for device, count in by_device.items() if count}
        store._limits.pending = sum(store._pending_by_device.values())


def pending_changed(store: Store, changes: Mapping[str, int], sign: int) -> None:
    """Add (`sign` 1) or take away (-1) committed rows, per device. Under the write lock."""
    with store._counts_lock:
        counts = store._pending_by_device
        for device, rows in changes.items():
            left = counts.get(device, 0) + sign * rows
            if left:
                counts[device] = left
            else:
                counts.pop(device, None)
            store._limits.pending += sign * rows


def recount_pending(store: Store) -> bool:
    """Count pending punches per device in the table and adopt those counts; True when the
    counts kept in memory agreed (a disagreement is logged: it would be a bug)."""
    with store._write_lock:
        with store._engine.connect() as conn:
            counted = buffer_outbox.pending_devices(conn)
        with store._counts_lock:
            kept = dict(store._pending_by_device)
        if kept != counted:
            log.warning(
                "buffer_pending_counts_corrected",
                kept=sum(kept.values()),
                counted=sum(counted.values()),
                devices=sorted(set(kept.items()) ^ set(counted.items()))[:20],
            )
        set_pending_counts(store, counted)
        store._limits.update_full()
    return kept == counted


def pending_devices(store: Store) -> dict[str, int]:
    """Undelivered punches per device (devices with some); from memory, no query."""
    with store._counts_lock:
        counts, total = dict(store._pending_by_device), store._limits.pending
    if sum(counts.values()) != total:
        # A write path kept the total but not the devices' counts: count them again.
        recount_pending(store)
        with store._counts_lock:
            counts = dict(store._pending_by_device)
    return counts
