"""Handing out per-device batch sequence numbers from blocks reserved in the file.

Kept apart from `store.py` because it has its own lock (`_seq_lock`, taken after the write
lock, never before) and its own invariant: a number is handed out only once the commit that
reserved it returned (`buffer_devices` keeps the reservations).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from punchgate.sync import buffer_devices

if TYPE_CHECKING:
    from punchgate.sync.store import Store


def next_batch_seqs(store: Store, devices: Sequence[str]) -> list[int]:
    """`Store.next_batch_seq` for each entry in order (see `Store.next_batch_seqs`)."""
    need = Counter(devices)
    with store._seq_lock:
        if all(_seq_left(store, device) >= count for device, count in need.items()):
            return [_take_seq(store, device) for device in devices]
    with store._write_lock:
        with store._seq_lock:
            short = {d: n for d, n in need.items() if _seq_left(store, d) < n}
            ahead = [d for d in store.pending_devices() if d not in need and _seq_left(store, d) == 0]
        wanted = {**{d: 1 for d in ahead}, **short}
        with store._writer.begin() as conn:
            blocks = buffer_devices.reserve_seq_blocks(conn, wanted)
        with store._seq_lock:  # only once committed: a number is handed out after its reservation
            store._seq.update(blocks)
            return [_take_seq(store, device) for device in devices]


def _seq_left(store: Store, device: str) -> int:
    current = store._seq.get(device)
    return 0 if current is None else current[1] - current[0] + 1


def _take_seq(store: Store, device: str) -> int:
    seq, reserved = store._seq[device]
    store._seq[device] = (seq + 1, reserved)
    return seq
