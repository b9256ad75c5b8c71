"""What the buffer file looks like before SQLite touches it: present, empty, SQLite, whole.

Why look before opening: SQLite takes an empty file for a new, empty database and would let
the store start over with nothing, and it reports a damaged header only as "file is not a
database". Reading the 100-byte header ourselves (layout: https://www.sqlite.org/fileformat.html,
"The Database Header") tells an empty file, one that is not SQLite at all (random bytes, a
corrupt header) and one cut short apart, with a sentence a person can act on, and without
writing a byte: a refused file is left exactly as it was found.

Damage inside the file (a bad b-tree page, a flipped byte in a page header) is SQLite's to
find: `PRAGMA quick_check` at open, `integrity_check` in `punchgate buffer check`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from punchgate.sync.buffer_paths import BufferPaths

MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100


@dataclass(frozen=True, slots=True)
class FileState:
    """The database file as found. `problem` is None when nothing is wrong that can be seen
    without SQLite; otherwise a BufferRefusedError problem code, with `detail` saying why."""

    exists: bool
    size: int = 0
    wal_size: int = 0
    page_size: int | None = None
    header_pages: int | None = None  # the page count the header claims, when it is valid
    problem: str | None = None
    detail: str = ""


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def valid_page_size(size: int) -> bool:
    """SQLite pages are a power of two from 512 to 65536 bytes."""
    return 512 <= size <= 65536 and size & (size - 1) == 0


def page_size_of(header: bytes) -> int | None:
    """The page size a header declares, or None when it is not a valid one."""
    raw = int.from_bytes(header[16:18], "big")
    size = 65536 if raw == 1 else raw
    return size if valid_page_size(size) else None


def header_problem(header: bytes) -> tuple[str, str] | None:
    """(problem, detail) when `header` is not a usable SQLite header, else None."""
    if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
        shown = header[:16].hex(" ")
        return (
            "not_sqlite",
            f"it is not a SQLite database (its header is missing or damaged; first bytes: {shown})",
        )
    if page_size_of(header) is None:
        return "corrupt", f"its SQLite header is damaged (page size field {header[16:18].hex()})"
    if header[21:24] != bytes((64, 32, 32)) or header[18] not in (1, 2) or header[19] not in (1, 2):
        return "corrupt", "its SQLite header is damaged (fixed fields do not hold their fixed values)"
    return None


def inspect_file(paths: BufferPaths) -> FileState:
    """Look at the database file's size and header (reads at most 100 bytes, writes nothing)."""
    size = _size(paths.db)
    wal_size = _size(paths.wal) or 0
    if size is None:
        return FileState(exists=False, wal_size=wal_size)
    if size == 0:
        return FileState(True, 0, wal_size, problem="empty", detail="the file is empty (0 bytes)")
    with paths.db.open("rb") as f:
        header = f.read(HEADER_SIZE)
    bad = header_problem(header)
    if bad is not None:
        return FileState(True, size, wal_size, problem=bad[0], detail=bad[1])
    page_size = page_size_of(header)
    assert page_size is not None  # header_problem checked it
    change_counter, pages, valid_for = header[24:28], int.from_bytes(header[28:32], "big"), header[92:96]
    header_pages = pages if pages > 0 and change_counter == valid_for else None
    state = FileState(True, size, wal_size, page_size, header_pages)
    if size % page_size:
        return _cut_short(state, f"{size} bytes is not a whole number of {page_size}-byte pages")
    # With a non-empty WAL the header may be ahead of the file for a moment (a checkpoint cut
    # short by a crash rewrites page 1 first); SQLite finishes that checkpoint on open, and
    # quick_check judges what is really there.
    if header_pages is not None and wal_size == 0 and size < header_pages * page_size:
        return _cut_short(
            state,
            f"it holds {size // page_size} of the {header_pages} pages its header counts ({size} bytes)",
        )
    return state


def _cut_short(state: FileState, why: str) -> FileState:
    return replace(state, problem="truncated", detail=f"the file is cut short: {why}")
