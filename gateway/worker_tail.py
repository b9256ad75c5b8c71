"""Reading only what a grown log added (a tail read), when the driver can.

A terminal punched at a factory's rate has a new count at nearly every poll; reading its whole
log each time moves thousands of records to find a handful. A driver that can read the log
from a given record on (`TailReader`; ZK: READ_BUFFER from an offset) is asked for the records
from the last one stored (`TailState.anchor`) to the end. Only when that record is still
there, the same bytes at the same place, are the records after it taken as the new ones, and
the known log goes on from them (its running digest extended, `KnownLog`). Anything else (no
state from a whole read yet, the driver cannot, the anchor differs: a log cleared, rewritten
or overwritten) leaves the decision to a whole read, and the worker's periodic whole read
still comes (the terminal's `full_read_every`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

from punchgate.drivers.base import DeviceInfo, RawPunch, TailOutcome
from punchgate.gateway.worker_known_log import MAX_MARKS, KnownLog, chain, pack_marks

# Polls that read whole after an offset read failed (a terminal that does not answer READ_BUFFER
# from an offset must not fail every poll), before offset reads are tried again.
TAIL_PAUSE_POLLS = 10


@runtime_checkable
class TailReader(Protocol):
    async def read_records_from(self, first: int, record_size: int) -> list[RawPunch] | None:
        """The records from index `first` to the end of the log, whose records are
        `record_size` bytes long (the stored ones were); None when only a whole read can say
        (another layout, the log holds no such record...)."""
        ...


@runtime_checkable
class ContactTailReader(Protocol):
    async def info_then_tail(
        self, tail_from: Callable[[DeviceInfo], int | None], record_size: int, *, first_hint: int
    ) -> tuple[DeviceInfo, TailOutcome | None]:
        """The contact, then in the same call the tail read `tail_from(info)` asks for, if any
        (ZK: one thread hop, `ZkDriver.info_then_tail`)."""
        ...


# isinstance against a runtime-checkable Protocol looks up each of its members on the object
# (typing's `_ProtocolMeta`): some microseconds, asked at every poll of every terminal (at 5,000
# terminals about 3 % of the daemon's samples, issue 18). What a driver offers is its class's
# methods, so the answer is kept per class.
_OFFERS: dict[tuple[type, type], bool] = {}


def _offers(driver: object, protocol: type) -> bool:
    key = (type(driver), protocol)
    answer = _OFFERS.get(key)
    if answer is None:
        answer = _OFFERS[key] = isinstance(driver, protocol)
    return answer


def reads_tails(driver: object) -> TypeGuard[TailReader]:
    """The driver can read the log from a given record on (`TailReader`)."""
    return _offers(driver, TailReader)


def reads_tails_with_contact(driver: object) -> TypeGuard[ContactTailReader]:
    """The driver can read a tail in the contact's own call (`ContactTailReader`)."""
    return _offers(driver, ContactTailReader)


@dataclass(frozen=True, slots=True)
class Tail:
    """A tail read's outcome: the records after the anchor, and the known log with them."""

    new: Sequence[RawPunch]
    known: KnownLog


def tail_first(info: DeviceInfo, known: KnownLog | None, driver: object) -> int | None:
    """The record to read from for a tail read of this poll, or None when a whole read is due.
    Only for a log that grew past what is stored, below its capacity (a full log overwrites
    its oldest records in place), from a known log whose last record's bytes are known."""
    count = info.record_count
    if known is None or not known.anchor or known.count == 0 or count is None or count <= known.count:
        return None
    if info.record_capacity and count >= info.record_capacity:
        return None
    if known.mark_count >= MAX_MARKS or not reads_tails(driver):
        return None
    return known.count - 1


def take_tail(raws: Sequence[RawPunch] | None, known: KnownLog) -> Tail | None:
    """The new records of a tail read that starts at the anchor; None when it does not (the
    whole log is read instead)."""
    if not raws or raws[0].raw != known.anchor:
        return None
    new = raws[1:]
    if not new or not new[-1].raw:
        return None
    count = known.count + len(new)
    marks = known.packed_marks or pack_marks((known.count,))
    return Tail(new, KnownLog(count, chain(known.digest, new), marks + pack_marks((count,)), new[-1].raw))
