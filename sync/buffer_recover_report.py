"""What `punchgate buffer recover` found and did: per table and for the whole file.

`TableSalvage` counts one table's rows (read, written, dropped, found by the page scan) and the
rowid ranges it could not read, and estimates the rows lost from them; `RecoverReport` gathers
the tables, the identities and the files kept aside, and says it all in lines for the operator.
The reading and writing modules fill these in; nothing here touches a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from punchgate.sync.buffer_identity import Identity


class RecoverError(Exception):
    """Recovery could not run (nothing to recover, no room); nothing was changed."""


@dataclass
class TableSalvage:
    """What was read from one table, and what could not be."""

    table: str
    read: int = 0  # rows SQLite returned
    written: int = 0  # rows in the new file (those found by the page scan included)
    dropped: int = 0  # rows read but unusable (broken payload, constraint violations)
    scanned: int = 0  # rows the tree walk missed and the page scan found
    gaps: list[tuple[int, int | None]] = field(default_factory=list)  # (last good rowid, next) skipped
    gap_rowids: int | None = 0  # rowids inside the skipped ranges; None: a tail of unknown length
    indexed: int | None = None  # rows the table's own index lists (when it is readable)
    error: str | None = None  # the table could not be read at all

    @property
    def lost_estimate(self) -> int | None:
        """Rows the old file held that the new one lacks: by the table's index when it could be
        read, else the rowids in the skipped ranges (an upper bound); None when unknown."""
        if self.indexed is not None:
            return max(0, self.indexed - self.written)
        if self.error or self.gap_rowids is None:
            return None
        return max(0, self.gap_rowids - self.scanned) + self.dropped

    def describe(self, stored_ever: int | None = None) -> str:
        """One line; `stored_ever` (the old identity's count, for punches) bounds an otherwise
        unknown loss."""
        text = f"{self.table}: {self.read} rows read"
        if self.scanned:
            text += f", {self.scanned} more found by reading its pages directly"
        text += f", {self.written} written"
        if self.dropped:
            text += f", {self.dropped} dropped (damaged)"
        if self.error:
            text += f"; the table could not be read: {self.error}"
        elif self.gaps:
            text += f"; {len(self.gaps)} unreadable ranges skipped"
        lost = self.lost_estimate
        if lost is None and stored_ever is not None:
            bound = max(0, stored_ever - self.written)
            return f"{text}; rows lost: at most {bound} (of {stored_ever} ever stored; purged ones count here too)"
        if lost is None:
            return f"{text}; rows lost: unknown"
        how = "by its index" if self.indexed is not None else "at most, by row ids"
        return f"{text}; rows lost: {lost} ({how})" if lost or self.gaps or self.error else text


@dataclass
class RecoverReport:
    """What `recover` did: for the operator, and for tests."""

    path: Path
    kept: list[Path] = field(default_factory=list)
    header_rebuilt: int | None = None  # the page size the rebuilt header declares
    source_error: str | None = None  # SQLite could not read the file at all
    source_version: int | None = None
    old_identity: Identity | None = None
    new_identity: Identity | None = None
    tables: list[TableSalvage] = field(default_factory=list)
    pending: int = 0
    delivered: int = 0
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> TableSalvage | None:
        return next((t for t in self.tables if t.table == name), None)

    @property
    def lost_estimate(self) -> int | None:
        """Rows lost over all tables (None when a table's loss cannot be estimated)."""
        estimates = [t.lost_estimate for t in self.tables]
        return None if None in estimates else sum(e for e in estimates if e is not None)

    def lines(self) -> list[str]:
        out = [f"recovered buffer {self.path}"]
        if self.source_error:
            out.append(f"  SQLite could not read the file itself: {self.source_error}")
        if self.header_rebuilt:
            out.append(f"  its damaged header was rebuilt (page size {self.header_rebuilt}) to read it")
        stored = self.old_identity.stored if self.old_identity is not None else None
        out += [f"  {t.describe(stored if t.table == 'punches' else None)}" for t in self.tables]
        if self.old_identity is not None:
            out.append(f"  old identity: {self.old_identity.describe()}")
        if self.new_identity is not None:
            out.append(
                f"  new file: {self.pending} pending, {self.delivered} delivered punches; identity {self.new_identity.describe()}"
            )
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  kept aside: {path}" for path in self.kept]
        return out
