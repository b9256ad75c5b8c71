"""Rows found by reading a damaged SQLite file's pages directly, for `buffer recover`.

When an interior or root page of a table is damaged, SQLite cannot reach any row below it,
although the leaf pages holding the rows are usually intact. This reads every page of the
file (file format: https://www.sqlite.org/fileformat.html), with the newest committed copy of
each page from the WAL laid over it, skips the pages on the free list, and decodes every cell
of every table-leaf page into (rowid, values). The caller decides which of those rows belong
to which table (by column count and content) and drops what does not fit.

What it cannot promise: a free page whose free-list entry was lost may still hold an old
copy of a row; the caller keeps a row found here only when the tree walk did not find its
rowid, and its content must be internally consistent (for punches: the payload's `id` is the
row's id). Every decoding problem skips the cell, never the scan.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from punchgate.sync.buffer_inspect import HEADER_SIZE, page_size_of, valid_page_size

_TABLE_LEAF = 0x0D
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24
_MAX_CHAIN = 1_000_000  # pages followed in one free-list or overflow chain, at most

Value = Any


def wal_pages(wal: bytes, page_size: int | None = None) -> tuple[int, dict[int, bytes], int] | None:
    """The committed pages of a WAL file's current generation: (page size, page number ->
    newest committed copy, database size in pages after the last commit); None when `wal` is
    not a WAL (or its page size is not `page_size`). Checksums are not verified: a frame of
    an earlier generation is told apart by its salts, and a torn last frame by its commit
    marker, which is all salvage needs."""
    if len(wal) < _WAL_HEADER:
        return None
    magic, _version, size, _checkpoint, salt1, salt2 = struct.unpack(">IIIIII", wal[:24])
    if magic not in _WAL_MAGIC or not valid_page_size(size):
        return None
    if page_size is not None and size != page_size:
        return None
    committed: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    pages = 0
    at = _WAL_HEADER
    while at + _FRAME_HEADER + size <= len(wal):
        number, commit_size, s1, s2 = struct.unpack(">IIII", wal[at : at + 16])
        if (s1, s2) != (salt1, salt2):
            break  # a frame of an earlier WAL generation: nothing after it is current
        pending[number] = wal[at + _FRAME_HEADER : at + _FRAME_HEADER + size]
        if commit_size:  # a commit frame: everything up to here is committed
            committed.update(pending)
            pending = {}
            pages = commit_size
        at += _FRAME_HEADER + size
    return size, committed, pages


def wal_image(wal: Path, out: Path) -> int | None:
    """Write the database as its WAL alone describes it to `out` (pages the WAL does not hold
    are zeros); the page size, or None when `wal` holds no committed page."""
    found = wal_pages(wal.read_bytes())
    if found is None or not found[1]:
        return None
    page_size, pages, count = found
    count = max(count, *pages)
    with out.open("wb") as f:
        f.truncate(count * page_size)
        for number, data in pages.items():
            f.seek((number - 1) * page_size)
            f.write(data)
    return page_size


class _Pages:
    """The file's pages (1-based), with the newest committed WAL frame of each page laid over."""

    def __init__(self, data: mmap.mmap, wal: Path | None, page_size: int) -> None:
        self.size = page_size
        self.data = data  # mapped, not read: the file may be larger than memory
        self.count = len(data) // page_size
        self.overlay: dict[int, bytes] = {}
        if wal is not None and wal.exists():
            found = wal_pages(wal.read_bytes(), page_size)
            if found is not None:
                self.overlay = found[1]
                self.count = max(self.count, found[2])

    def page(self, number: int) -> bytes | None:
        if number in self.overlay:
            return self.overlay[number]
        start = (number - 1) * self.size
        if number < 1 or start + self.size > len(self.data):
            return None
        return bytes(self.data[start : start + self.size])


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    """SQLite's big-endian varint at `at`: (value, next offset)."""
    value = 0
    for i in range(8):
        byte = buf[at + i]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at + i + 1
    return (value << 8) | buf[at + 8], at + 9


def _free_pages(pages: _Pages, usable: int) -> set[int]:
    """Every page on the free list (trunks and leaves), as far as the list can be followed."""
    first = pages.page(1)
    free: set[int] = set()
    if first is None:
        return free
    trunk = int.from_bytes(first[32:36], "big")
    while trunk and trunk not in free and len(free) < _MAX_CHAIN:
        page = pages.page(trunk)
        if page is None:
            break
        free.add(trunk)
        count = int.from_bytes(page[4:8], "big")
        if count > (usable - 8) // 4:
            break
        free.update(int.from_bytes(page[8 + 4 * i : 12 + 4 * i], "big") for i in range(count))
        trunk = int.from_bytes(page[0:4], "big")
    return free


def _payload(pages: _Pages, page: bytes, at: int, size: int, usable: int) -> bytes | None:
    """A cell's whole payload: its local part, then its overflow chain (None if broken)."""
    most = usable - 35
    if size <= most:
        return page[at : at + size] if at + size <= len(page) else None
    least = (usable - 12) * 32 // 255 - 23
    local = least + (size - least) % (usable - 4)
    if local > most:
        local = least
    if at + local + 4 > len(page):
        return None
    parts = [page[at : at + local]]
    remaining = size - local
    next_page = int.from_bytes(page[at + local : at + local + 4], "big")
    seen = 0
    while remaining > 0:
        overflow = pages.page(next_page) if next_page else None
        if overflow is None or seen > _MAX_CHAIN:
            return None
        chunk = overflow[4 : 4 + min(remaining, usable - 4)]
        parts.append(chunk)
        remaining -= len(chunk)
        next_page = int.from_bytes(overflow[0:4], "big")
        seen += 1
    return b"".join(parts)


def _value(kind: int, buf: bytes, at: int) -> tuple[Value, int]:
    if kind == 0:
        return None, at
    if 1 <= kind <= 6:
        width = (1, 2, 3, 4, 6, 8)[kind - 1]
        return int.from_bytes(buf[at : at + width], "big", signed=True), at + width
    if kind == 7:
        return struct.unpack(">d", buf[at : at + 8])[0], at + 8
    if kind in (8, 9):
        return kind - 8, at
    if kind >= 12:
        width = (kind - 12) // 2
        raw = buf[at : at + width]
        if len(raw) != width:
            raise ValueError("value runs past the record")
        return (bytes(raw) if kind % 2 == 0 else raw.decode("utf-8")), at + width
    raise ValueError(f"reserved serial type {kind}")


def decode_record(payload: bytes) -> tuple[Value, ...]:
    """A record's values (ValueError when it is not a well-formed record)."""
    header_size, at = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise ValueError("bad record header size")
    kinds = []
    while at < header_size:
        kind, at = _varint(payload, at)
        kinds.append(kind)
    values = []
    at = header_size
    for kind in kinds:
        value, at = _value(kind, payload, at)
        values.append(value)
    if at != len(payload):
        raise ValueError("record length does not match its header")
    return tuple(values)


def _cells(pages: _Pages, number: int, usable: int) -> Iterator[tuple[int, tuple[Value, ...]]]:
    page = pages.page(number)
    base = HEADER_SIZE if number == 1 else 0
    if page is None or page[base] != _TABLE_LEAF:
        return
    count = int.from_bytes(page[base + 3 : base + 5], "big")
    for i in range(min(count, (usable - base - 8) // 2)):
        pointer = int.from_bytes(page[base + 8 + 2 * i : base + 10 + 2 * i], "big")
        try:
            size, at = _varint(page, pointer)
            rowid, at = _varint(page, at)
            if rowid >= 1 << 63:
                rowid -= 1 << 64
            payload = _payload(pages, page, at, size, usable)
            if payload is not None:
                yield rowid, decode_record(payload)
        except (IndexError, ValueError, UnicodeDecodeError, struct.error):
            continue


def leaf_rows(
    db: Path, wal: Path | None, *, page_size: int | None = None
) -> Iterator[tuple[int, tuple[Value, ...]]]:
    """(rowid, values) of every cell of every table-leaf page not on the free list.

    `page_size` is the header's unless given (a damaged header's file is read as 4096-byte
    pages, SQLite's default, when the caller knows no better). Nothing is read past the free
    list when the header is unreadable (the free list starts in the header)."""
    with db.open("rb") as f:
        header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            return
        header_ok = page_size_of(header) is not None
        page_size = page_size or page_size_of(header)
        if page_size is None:
            return
        reserved = header[20] if header_ok else 0
        usable = page_size - reserved
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pages = _Pages(data, wal, page_size)
            free = _free_pages(pages, usable) if header_ok else set()
            for number in range(2, pages.count + 1):  # page 1 is sqlite_master's
                if number not in free:
                    yield from _cells(pages, number, usable)
