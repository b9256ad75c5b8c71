"""Reading only what a grown log added (a tail read), when the driver can.

A terminal punched at a factory's rate has a new count at nearly every poll; reading its whole
log each time moves thousands of records to find a handful. A driver that can read the log
from a given record on (`TailReader`; ZK: READ_BUFFER from an offset) is asked for the records
from the last one stored (`TailState.anchor`) to the end. Only when that record is still
there, the same bytes at the same place, are the records after it taken as the new ones, and
the known log goes on from them (its running digest extended, `KnownLog`). Anything else (no
state from a whole read yet, the driver cannot, the anchor differs: a log cleared, rewritten
or overwritten) leaves the decision to a whole read, and the worker's periodic whole read
still comes every `RECONCILE_POLLS` polls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from punchgate.drivers.base import DeviceInfo, RawPunch
from punchgate.gateway.worker_known_log import KnownLog, TailState


@runtime_checkable
class TailReader(Protocol):
    async def read_records_from(self, first: int) -> list[RawPunch] | None:
        """The records from index `first` to the end of the log; None when only a whole read
        can say (the driver does not know the layout yet, the log holds no such record...)."""
        ...


@dataclass(frozen=True, slots=True)
class Tail:
    """A tail read's outcome: the records after the anchor, and the known log with them."""

    new: Sequence[RawPunch]
    known: KnownLog
    state: TailState


def tail_first(
    info: DeviceInfo, known: KnownLog | None, state: TailState | None, driver: object
) -> int | None:
    """The record to read from for a tail read of this poll, or None when a whole read is due.
    Only for a log that grew past what is stored, below its capacity (a full log overwrites
    its oldest records in place)."""
    count = info.record_count
    if known is None or state is None or known.count == 0 or count is None or count <= known.count:
        return None
    if info.record_capacity and count >= info.record_capacity:
        return None
    if not isinstance(driver, TailReader):
        return None
    return known.count - 1


def take_tail(raws: Sequence[RawPunch] | None, known: KnownLog, state: TailState) -> Tail | None:
    """The new records of a tail read that starts at the anchor; None when it does not (the
    whole log is read instead)."""
    if not raws or raws[0].raw != state.anchor:
        return None
    new = raws[1:]
    hasher = state.hasher.copy()
    hasher.feed(new)
    anchor = new[-1].raw if new else state.anchor
    if not anchor:
        return None
    return Tail(new, KnownLog(known.count + len(new), hasher.digest()), TailState(hasher, anchor))
