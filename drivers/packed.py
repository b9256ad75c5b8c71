"""Records as the terminal sent them, decoded only when someone reads one.

A whole read of a log moves every record the terminal holds, but after the first read all
but the newest few are already in the buffer: the gateway recognises that stored prefix by
its bytes (`punchgate.gateway.worker_known_log`) and drops it. Decoding those records into
`RawPunch`es first was most of a whole read's CPU (about 25 of 45 ms for a 3,000-record ZK
log), so a driver hands a part over as `PackedRecords`: the bytes, the record size and how
to decode one record. Whoever needs a record decodes it; whoever needs only the bytes
(`packed`) takes them without decoding anything.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from punchgate.drivers.base import RawPunch


class PackedRecords(Sequence[RawPunch]):
    """`len(packed) // size` records of `size` bytes each; record i is `decode(its bytes)`,
    whose `raw` must be those bytes (so `packed` is the records' `raw` joined, in order)."""

    __slots__ = ("decode", "packed", "size")

    def __init__(self, packed: bytes, size: int, decode: Callable[[bytes], RawPunch]) -> None:
        if size <= 0 or len(packed) % size:
            raise ValueError(f"{len(packed)} bytes are not whole records of {size} bytes")
        self.packed = packed
        self.size = size
        self.decode = decode

    def __len__(self) -> int:
        return len(self.packed) // self.size

    @overload
    def __getitem__(self, index: int) -> RawPunch: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[RawPunch]: ...

    def __getitem__(self, index: int | slice) -> RawPunch | Sequence[RawPunch]:
        size = self.size
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(lo, hi, step)]
            return PackedRecords(self.packed[lo * size : max(lo, hi) * size], size, self.decode)
        i = operator.index(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        return self.decode(self.packed[i * size : (i + 1) * size])

    def __iter__(self) -> Iterator[RawPunch]:
        size, decode, packed = self.size, self.decode, self.packed
        return (decode(packed[i : i + size]) for i in range(0, len(packed), size))

    def __repr__(self) -> str:
        return f"PackedRecords({len(self)} records of {self.size} bytes)"

    def joinable(self, other: object) -> bool:
        """Whether `other` is a run of the same records (size and decoding) to append."""
        return isinstance(other, PackedRecords) and other.size == self.size and other.decode == self.decode


def raw_bytes(raws: Sequence[RawPunch], missing: Callable[[RawPunch], bytes]) -> bytes:
    """The records' own bytes joined in order, `missing(record)` for one the driver gave no
    bytes for; packed records give theirs without being decoded."""
    if isinstance(raws, PackedRecords):
        return raws.packed
    return b"".join([raw.raw or missing(raw) for raw in raws])


def last_raw(raws: Sequence[RawPunch]) -> bytes:
    """The last record's own bytes (b"" when the driver gave none), not decoded if packed."""
    if isinstance(raws, PackedRecords):
        return raws.packed[-raws.size :]
    return raws[-1].raw


def concat(parts: Sequence[Sequence[RawPunch]]) -> Sequence[RawPunch]:
    """The parts as one sequence: still packed (nothing decoded) when they all are alike."""
    if not parts:
        return []
    first = parts[0]
    if isinstance(first, PackedRecords) and all(first.joinable(p) for p in parts[1:]):
        if len(parts) == 1:
            return first
        packed = b"".join([p.packed for p in parts if isinstance(p, PackedRecords)])
        return PackedRecords(packed, first.size, first.decode)
    return [raw for part in parts for raw in part]
