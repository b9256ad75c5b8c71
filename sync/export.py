"""Exports for payroll: the punches the buffer holds, as CSV or XLSX (docs/export.md).

Reads the buffer file read-only (`mode=ro`), so it runs beside the daemon: a WAL reader sees
the last commit and never blocks the writer. Every row comes from the record the broker
received (`payload`), so the export says exactly what central was sent.

* Range: `start` inclusive, `end` exclusive, in each terminal's local time (what payroll
  counts in). The SQL filter is on the UTC column, widened by a day either side, and the exact
  local-time test runs on each row.
* Memory stays flat however many rows: SQLite sorts (spilling to temporary files), rows stream
  from the cursor to the writer, openpyxl runs in write-only mode, and the summary keeps one
  small record per user and day.
* A failed export leaves no file behind: output goes to a temporary file beside the target and
  is renamed into place when complete.

The parts: `export_model` (the request, a row, the result), `export_read` (the buffer side),
`export_summary` (per user and day), `export_csv` and `export_xlsx` (the two formats). This
module checks the target and puts them together; the names callers use are importable here.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path

from punchgate.sync.export_csv import write_csv
from punchgate.sync.export_model import (
    HEADER,
    PROGRESS_EVERY,
    ExportError,
    ExportQuery,
    ExportResult,
    Format,
    Progress,
    Row,
    parse_bound,
)
from punchgate.sync.export_read import check, connect, count, held_since, rosters, rows
from punchgate.sync.export_summary import SUMMARY_HEADER, Summary
from punchgate.sync.export_xlsx import SUMMARY_WIDTHS, WIDTHS, write_xlsx

__all__ = [
    "HEADER",
    "PROGRESS_EVERY",
    "SUMMARY_HEADER",
    "SUMMARY_WIDTHS",
    "WIDTHS",
    "ExportError",
    "ExportQuery",
    "ExportResult",
    "Format",
    "Progress",
    "Row",
    "Summary",
    "check",
    "check_target",
    "connect",
    "count",
    "export",
    "held_since",
    "parse_bound",
    "rosters",
    "rows",
    "write_csv",
    "write_xlsx",
]


def check_target(out: Path) -> None:
    """ExportError when `out` cannot be written (checked before anything is read)."""
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ExportError(f"{out} is a directory: name a file")
    if not folder.is_dir():
        raise ExportError(f"cannot write {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"cannot write {out}: no permission to write in {folder}")
    if out.exists() and not os.access(out, os.W_OK):
        raise ExportError(f"cannot write {out}: the file is not writable")


def export(
    buffer: Path,
    query: ExportQuery,
    out: Path,
    fmt: Format,
    *,
    known_devices: Sequence[str] = (),
    progress: Progress | None = None,
) -> ExportResult:
    """Write the export to `out` (replaced only once complete); ExportError on bad input."""
    check_target(out)
    conn = connect(buffer)
    try:
        conn.execute("BEGIN")  # one snapshot: the export is consistent even while punches arrive
        check(conn, query, known_devices=known_devices)
        names = rosters(conn)
        fd, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        temp = Path(temp_name)
        try:
            source = rows(conn, query, names)
            if fmt == "csv":
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    result = ExportResult(out, rows=write_csv(source, handle, progress))
            else:
                os.close(fd)
                result = write_xlsx(source, temp, progress)
                result.path = out
            os.replace(temp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise ExportError(f"{buffer}: cannot read the buffer: {exc}") from None
    finally:
        conn.close()
    return result
