"""What central delivery remembers between a send and its confirmation (sync/confirmations.py).

* `RememberedBatches`: the pks (and ids) of recently published batches, for a confirmation that
  names a batch;
* (`SentIds`, record id -> pk of the rows this process sent, is in sync/confirmations_sent.py;)
* `HeldAcks`: rows the broker acknowledged, held `SENT_MARK_GRACE` for their confirmation before
  they are written as sent, and the pks confirmed recently.

Each is bounded; whatever one forgets is handled the slower way (by id in the buffer's index, or
written as sent), never lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence

# How long a row the broker acknowledged waits for its confirmation before it is marked sent in
# the buffer (a sink commits and confirms within tens of milliseconds; see the module docstring).
SENT_MARK_GRACE = 1.0
# While confirmations keep coming (one confirmed something within the last SENT_MARK_GRACE), a
# row waits up to this long instead: a consumer that is confirming but lags behind the PUBACKs
# (a backlog, a loaded machine) would otherwise have each row written twice, sent and then
# confirmed, by the very writer it is waiting for.
SENT_MARK_MAX_HOLD = 10.0
# Rows acknowledged and waiting for that mark, beyond which they are marked at once (memory bound).
SENT_MARK_MAX_ROWS = 100_000
# How long a confirmed pk is remembered so that its late PUBACK is not written as "sent".
CONFIRMED_MEMORY_SECONDS = 30.0


class RememberedBatches:
    """The pks of recently published batches by (device, seq), bounded by their total rows."""

    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows
        self._rows = 0
        # (device, seq) -> (pks, their record ids when the drain gave them)
        self._batches: OrderedDict[tuple[str, int], tuple[list[int], Sequence[str]]] = OrderedDict()
        self._lock = threading.Lock()  # the drain adds, the confirmations' worker pops

    def add(self, device: str, seq: int, pks: list[int], ids: Sequence[str] = ()) -> None:
        with self._lock:
            self._batches[(device, seq)] = (pks, ids)
            self._rows += len(pks)
            while self._rows > self._max_rows and self._batches:
                _key, (dropped, _ids) = self._batches.popitem(last=False)
                self._rows -= len(dropped)

    def pop(self, device: str, seq: int) -> tuple[list[int], Sequence[str]] | None:
        with self._lock:
            batch = self._batches.pop((device, seq), None)
            if batch is not None:
                self._rows -= len(batch[0])
            return batch


class HeldAcks:
    """PUBACKed pks waiting for their confirmation before they are marked sent, and the pks
    confirmed recently (a confirmation may come before the PUBACK is noted).

    A row waits SENT_MARK_GRACE; while confirmations keep coming (the last one that confirmed
    something is less than SENT_MARK_GRACE old) up to SENT_MARK_MAX_HOLD: a consumer that stops
    confirming still has its rows marked sent one grace after its last confirmation."""

    def __init__(self) -> None:
        self._held: deque[tuple[float, list[int]]] = deque()
        self._rows = 0
        self._last_confirmed = float("-inf")  # when a confirmation last delivered something
        # Two generations, rotated every CONFIRMED_MEMORY_SECONDS: bounded, and a pk is
        # remembered for at least that long.
        self._confirmed: set[int] = set()
        self._confirmed_old: set[int] = set()
        self._rotated = time.monotonic()

    def hold(self, pks: list[int], now: float) -> None:
        self._held.append((now, pks))
        self._rows += len(pks)

    def confirmed(self, pks: Sequence[int], now: float) -> None:
        if pks:
            self._last_confirmed = now
        if now - self._rotated >= CONFIRMED_MEMORY_SECONDS:
            self._confirmed_old, self._confirmed = self._confirmed, set()
            self._rotated = now
        self._confirmed.update(pks)

    def _hold(self, now: float) -> float:
        """How long a row waits at `now`: longer while confirmations keep coming."""
        return SENT_MARK_MAX_HOLD if now - self._last_confirmed < SENT_MARK_GRACE else SENT_MARK_GRACE

    def due(self, now: float, *, everything: bool = False) -> list[int]:
        """The held pks whose wait is over (all with `everything`, or beyond the memory bound),
        less those confirmed meanwhile: what still has to be marked sent."""
        out: list[int] = []
        hold = self._hold(now)
        while self._held and (
            everything or self._rows > SENT_MARK_MAX_ROWS or now - self._held[0][0] >= hold
        ):
            _at, pks = self._held.popleft()
            self._rows -= len(pks)
            out.extend(pk for pk in pks if pk not in self._confirmed and pk not in self._confirmed_old)
        return out

    def over_bound(self) -> bool:
        """More rows held than SENT_MARK_MAX_ROWS: they are due whatever their grace."""
        return self._rows > SENT_MARK_MAX_ROWS

    def next_due(self) -> float | None:
        """When the oldest held pks' wait ends (monotonic time), unless a confirmation comes
        meanwhile; None when nothing is held."""
        if not self._held:
            return None
        oldest = self._held[0][0]
        quiet_from = self._last_confirmed + SENT_MARK_GRACE  # from then on the short wait applies
        return max(oldest + SENT_MARK_GRACE, min(oldest + SENT_MARK_MAX_HOLD, quiet_from))


def record_id_of(payload: str) -> str:
    """The record id of a stored record's JSON text. Records are rendered with the id first
    (`contract_punches.record_json`), so it is a slice; anything else is parsed."""
    if payload.startswith('{"id":"') and payload[39:41] == '",':
        return payload[7:39]
    return str(json.loads(payload)["id"])
