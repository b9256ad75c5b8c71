"""What a terminal's log already holds in the buffer, and when a poll must read it all.

A full read normalises only the records after the part of the log the previous read stored
(`KnownLog`, recognised by a running digest, `LogHasher`), taking the log part by part as the
driver hands it over (`LogIntake`); a poll reads the whole log only when
the count says it may hold something new (`why_read`). Kept apart from the worker: this is the
poll cost logic, a pure decision on the worker's state, testable without a terminal.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from punchgate.drivers.base import DeviceInfo, RawPunch
from punchgate.drivers.packed import concat, last_raw, raw_bytes

# A poll reads the whole log only when it may hold a record we have not stored: when the
# terminal's record count is not what the last full read plus the live stream account for,
# when the log is at capacity (a terminal that overwrites its oldest records keeps its count),
# when the count is unknown, and at least every `reconcile_polls` polls whatever the count says
# (the terminal's `full_read_every` in polls: `reconcile_polls_for`): a log cleared and refilled
# to the same count must not hide its records for longer than that. RECONCILE_POLLS is the
# worker's default when it is built without a terminal's setting (tests).
RECONCILE_POLLS = 10
DIGEST_VERSION = "1"
DIGEST_BYTES = 16
# The device meta key under which the known log survives a restart: `{"count", "digest" (hex),
# "marks", "anchor" (hex), "read_at" (unix seconds of the last whole-log read)}`. Its digest is
# seeded with the serial, driver and encoding (`LogHasher`), so it never matches another
# terminal's or config's log.
KNOWN_LOG_KEY = "known_log"
# Tail reads chained onto one whole read's digest before a whole read is asked for. A log that
# grows at nearly every poll gets a tail read at nearly every poll, so this must cover a whole
# `full_read_every` (120 polls at the defaults, 720 at 5 s polls): with 64 such a log was read
# whole every ~37 minutes, not hourly, 1.6 times the whole reads its setting asks for (issue
# 18). It only bounds what one terminal's meta and marks may hold (4 KB packed).
MAX_MARKS = 1024
# Marks are kept packed, 4 bytes each: as a tuple of ints, 120 marks took about 4.8 KB a
# terminal (23 MiB at 5,000 terminals).
_MARK_TYPE: Final = "I"
_MARK_BYTES: Final = array(_MARK_TYPE).itemsize


@dataclass(frozen=True, slots=True)
class KnownLog:
    """The part of a terminal's log already stored: its first `count` records hash to `digest`.

    After a whole read `marks` is empty and `digest` is the running digest of the records
    (`LogHasher`). Each tail read (gateway/worker_tail.py) chains the records it added onto it
    (`chain`), and `marks` then says where: (records of the whole read, count after each tail
    read...), kept packed (`packed_marks`, `pack_marks`). `anchor` is the last stored record's
    bytes (a tail read starts from it)."""

    count: int
    digest: bytes
    packed_marks: bytes = b""
    anchor: bytes = b""

    @property
    def marks(self) -> tuple[int, ...]:
        return tuple(memoryview(self.packed_marks).cast(_MARK_TYPE))

    @property
    def mark_count(self) -> int:
        return len(self.packed_marks) // _MARK_BYTES

    def to_meta(self, read_at: float) -> dict[str, object]:
        """As kept in the device meta (`KNOWN_LOG_KEY`), with when the whole log was last read
        (unix seconds): a restarted gateway then trusts the count as a running one does."""
        return {
            "count": self.count,
            "digest": self.digest.hex(),
            "marks": list(self.marks),
            "anchor": self.anchor.hex(),
            "read_at": round(read_at, 3),
        }

    @staticmethod
    def from_meta(meta: object) -> tuple[KnownLog, float] | None:
        """The known log and its `read_at` as kept in the device meta; None when absent or not
        understood (the first poll then reads the whole log, as it always did)."""
        if not isinstance(meta, dict):
            return None
        count, digest, read_at = meta.get("count"), meta.get("digest"), meta.get("read_at")
        if not (isinstance(count, int) and count >= 0 and isinstance(digest, str)):
            return None
        if not isinstance(read_at, int | float):
            return None
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            return None
        if len(raw) != DIGEST_BYTES:
            return None
        marks, anchor = meta.get("marks", []), meta.get("anchor", "")
        if not (
            isinstance(marks, list) and all(isinstance(m, int) for m in marks) and isinstance(anchor, str)
        ):
            return None
        if marks and (marks != sorted(marks) or marks[-1] != count or marks[0] < 0):
            return None
        try:
            anchor_raw = bytes.fromhex(anchor)
            packed = pack_marks(marks)
        except (ValueError, OverflowError):  # OverflowError: a mark past what 4 bytes hold
            return None
        return KnownLog(count, raw, packed, anchor_raw), float(read_at)


def pack_marks(marks: Iterable[int]) -> bytes:
    """Marks as `KnownLog.packed_marks` holds them."""
    return array(_MARK_TYPE, marks).tobytes()


class LogHasher:
    """A running digest of a log's records in order: each record's own bytes where the driver
    gives them, else its identifying fields. Seeded with what else decides a record's id
    (serial, driver, text encoding), so a changed terminal or config never matches."""

    def __init__(self, seed: str) -> None:
        self._hash = hashlib.blake2b(seed.encode("utf-8"), digest_size=DIGEST_BYTES)

    def feed(self, raws: Sequence[RawPunch]) -> None:
        # One join over the records' bytes (packed ones are not even decoded): a Python call
        # per record would cost more than the hash.
        self._hash.update(raw_bytes(raws, fields_key))

    def digest(self) -> bytes:
        return self._hash.digest()


def chain(digest: bytes, raws: Sequence[RawPunch]) -> bytes:
    """A known log's digest with `raws`, the records after it, chained on (a tail read): only
    the previous digest is needed, so it goes on after a restart too."""
    joined = raw_bytes(raws, fields_key)
    return hashlib.blake2b(b"\x1dchain" + digest + joined, digest_size=DIGEST_BYTES).digest()


def matches(known: KnownLog, prefix: Sequence[RawPunch], plain: LogHasher) -> bool:
    """Whether `prefix` (the first `known.count` records of a log) is the known log; `plain`
    is fed every record of it either way (the running digest a whole read goes on from)."""
    marks = known.marks
    base = marks[0] if marks else known.count
    plain.feed(prefix[:base])
    digest = plain.digest()
    for lo, hi in itertools.pairwise(marks):
        digest = chain(digest, prefix[lo:hi])
    plain.feed(prefix[base:])
    return digest == known.digest


def fields_key(raw: RawPunch) -> bytes:
    """A record the driver gives no bytes for: the fields its id is made of."""
    return f"\0{raw.user_id}\x1f{raw.timestamp.isoformat()}\x1f{raw.state}\x1f{raw.verify}\x1e".encode()


def reconcile_polls_for(full_read_every: float, poll_interval: float) -> int:
    """How many polls a whole read may be apart: `full_read_every` seconds in poll intervals,
    rounded up (a bound that is not a whole number of polls waits for the next one), at least 1."""
    return max(1, math.ceil(full_read_every / poll_interval - 1e-9))


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


class LogIntake:
    """One full read taken in part by part (`take`), against what the previous read stored.

    The records of the stored prefix (`known.count` of them) are held, not stored, until
    they are all there: if they hash to `known.digest` they are dropped (`skipped`, already in
    the buffer), else (a log cleared, rewritten or shorter than before) they are handed on
    with the rest and every record is checked. After that decision each part is handed on as
    it comes. The caller reports what it committed (`committed`), and `known()` then describes
    the stored prefix so far, so a read cut short keeps what it stored.

    Parts are held as the driver handed them: packed records (`PackedRecords`) are matched by
    their bytes, so a dropped prefix is never decoded (`newest_skipped` decodes it, once, for
    the one caller that asks).
    """

    def __init__(self, known: KnownLog | None, seed: str) -> None:
        self._known = known
        self._seed = seed
        self._hasher = LogHasher(seed)
        self._held: list[Sequence[RawPunch]] = []
        self._held_count = 0
        self._decided = known is None or known.count == 0
        self.count = 0  # records read so far
        self.skipped = 0  # records found already stored (the matched prefix)
        self.stored = 0  # records of the log in the buffer, in order from the first
        self._skipped_prefix: Sequence[RawPunch] = ()  # until `newest_skipped` is asked once
        self._last_raw: bytes | None = None  # the bytes of the last record stored, in log order

    def take(self, raws: Sequence[RawPunch]) -> Sequence[RawPunch]:
        """The records of this part to store now (none while the prefix is being matched)."""
        self.count += len(raws)
        if self._decided:
            return raws
        self._held.append(raws)
        self._held_count += len(raws)
        assert self._known is not None  # decided otherwise
        if self._held_count < self._known.count:
            return []
        return self._decide()

    def finish(self) -> Sequence[RawPunch]:
        """After the last part: what is still held (a log shorter than the stored prefix)."""
        return [] if self._decided else self._decide()

    def newest_skipped(self) -> RawPunch | None:
        """The newest record of the matched prefix, the first time it is asked (None after,
        and when nothing was skipped): it says when a terminal was last used, for a process
        that has stored nothing of it yet."""
        prefix, self._skipped_prefix = self._skipped_prefix, ()
        return max(prefix, key=lambda raw: raw.timestamp) if prefix else None

    def _decide(self) -> Sequence[RawPunch]:
        held = concat(self._held)
        self._held, self._held_count, self._decided = [], 0, True
        known = self._known
        assert known is not None
        if known.count <= len(held):
            hasher = LogHasher(self._seed)
            prefix = held[: known.count]
            if matches(known, prefix, hasher):
                self._hasher = hasher
                self.skipped = self.stored = known.count
                self._skipped_prefix = prefix
                self._last_raw = last_raw(prefix)
                return held[known.count :]
        return held  # not the log we read (cleared, rewritten, overwritten): all of it

    def committed(self, raws: Sequence[RawPunch]) -> None:
        """`raws`, the records `take`/`finish` handed on, are durably in the buffer."""
        self._hasher.feed(raws)
        self.stored += len(raws)
        if raws:
            self._last_raw = last_raw(raws)

    def known(self) -> KnownLog | None:
        """The stored prefix of the log as far as this read has got (before the prefix is
        decided, the previous read's)."""
        if not self._decided:
            return self._known
        return KnownLog(self.stored, self._hasher.digest(), b"", self._last_raw or b"")


def polls_since(read_at: float, now: float, interval: float) -> int:
    """Poll intervals gone by since the whole log was last read at `read_at` (a restart keeps
    the bound on reads the count cannot justify: `why_read`'s "periodic" counts these too)."""
    if interval <= 0 or now <= read_at:
        return 0
    return int((now - read_at) // interval)
