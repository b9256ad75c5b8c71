"""What a terminal's log already holds in the buffer, and when a poll must read it all.

A full read normalises only the records after the part of the log the previous read stored
(`KnownLog`, recognised by a running digest, `LogHasher`); a poll reads the whole log only when
the count says it may hold something new (`why_read`). Kept apart from the worker: this is the
poll cost logic, a pure decision on the worker's state, testable without a terminal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from punchgate.drivers.base import DeviceInfo, RawPunch

# A poll reads the whole log only when it may hold a record we have not stored: when the
# terminal's record count is not what the last full read plus the live stream account for,
# when the log is at capacity (a terminal that overwrites its oldest records keeps its count),
# when the count is unknown, and at least every RECONCILE_POLLS polls whatever the count says:
# a log cleared and refilled to the same count must not hide its records for longer than that.
RECONCILE_POLLS = 10
DIGEST_VERSION = "1"


@dataclass(frozen=True, slots=True)
class KnownLog:
    """The part of a terminal's log already stored: its first `count` records, as read by the
    last full read whose every record is in the buffer, hash to `digest` (`LogHasher`)."""

    count: int
    digest: bytes


class LogHasher:
    """A running digest of a log's records in order: each record's own bytes where the driver
    gives them, else its identifying fields. Seeded with what else decides a record's id
    (serial, driver, text encoding), so a changed terminal or config never matches."""

    def __init__(self, seed: str) -> None:
        self._hash = hashlib.blake2b(seed.encode("utf-8"), digest_size=16)

    def feed(self, raws: Sequence[RawPunch]) -> None:
        # One join over the records' bytes: a Python call per record would cost more than the hash.
        self._hash.update(b"".join([raw.raw or fields_key(raw) for raw in raws]))

    def digest(self) -> bytes:
        return self._hash.digest()


def fields_key(raw: RawPunch) -> bytes:
    """A record the driver gives no bytes for: the fields its id is made of."""
    return f"\0{raw.user_id}\x1f{raw.timestamp.isoformat()}\x1f{raw.state}\x1f{raw.verify}\x1e".encode()


def why_read(
    info: DeviceInfo,
    known: KnownLog | None,
    *,
    live_since_read: int,
    polls_since_read: int,
    reconcile_polls: int,
) -> str | None:
    """Why this poll must read the whole log; None when the count says nothing is new."""
    count = info.record_count
    if count is None:
        return "count_unknown"
    if known is None:
        return "reconcile"
    if count != known.count + live_since_read:
        return "count_changed"
    if info.record_capacity and count >= info.record_capacity:
        return "log_at_capacity"
    if polls_since_read + 1 >= reconcile_polls:
        return "periodic"
    return None


def stored_prefix(raws: Sequence[RawPunch], known: KnownLog | None, seed: str) -> tuple[int, LogHasher]:
    """How many leading records of `raws` the last full read stored (0 unless they are
    exactly its records), and the log's running digest that far."""
    if known is None or known.count == 0 or known.count > len(raws):
        return 0, LogHasher(seed)
    hasher = LogHasher(seed)
    hasher.feed(raws[: known.count])
    if hasher.digest() != known.digest:
        return 0, LogHasher(seed)  # not the log we read (cleared, rewritten, overwritten): all of it
    return known.count, hasher
