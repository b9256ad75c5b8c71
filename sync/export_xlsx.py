"""Writing an export as XLSX: a summary sheet, then one sheet per terminal.

openpyxl runs in write-only mode, so rows go straight to the file and memory stays flat.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from punchgate.sync.export_model import HEADER, PROGRESS_EVERY, ExportResult, Progress, Row
from punchgate.sync.export_summary import SUMMARY_HEADER, Summary

# Column widths, in the order of HEADER and of SUMMARY_HEADER.
WIDTHS = [14, 14, 10, 16, 20, 20, 9, 6, 12, 7, 12, 9, 8, 14, 18, 30, 16, 20, 16, 20, 34]
SUMMARY_WIDTHS = [10, 16, 12, 20, 20, 7, 7, 14, 24]


def _sheet_title(device: str, used: set[str]) -> str:
    base = device[:31]
    title, n = base, 1
    while title.lower() in used or title.lower() == "summary":
        n += 1
        title = f"{base[: 31 - len(str(n)) - 1]}~{n}"
    used.add(title.lower())
    return title


def write_xlsx(source: Iterator[Row], path: Path, progress: Progress | None = None) -> ExportResult:
    """XLSX in openpyxl's write-only mode: a summary sheet first, then a sheet per terminal;
    frozen header rows, column widths, times as Excel dates (local, and UTC in UTC)."""
    from openpyxl import Workbook  # type: ignore[import-untyped]  # no type information shipped
    from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
    from openpyxl.styles import Font  # type: ignore[import-untyped]

    book = Workbook(write_only=True)
    bold = Font(bold=True)

    def sheet(title: str, header: list[str], widths: list[int]) -> Any:
        ws = book.create_sheet(title)
        ws.freeze_panes = "A2"
        for index, width in enumerate(widths):
            ws.column_dimensions[_column_letter(index)].width = width
        cells = []
        for name in header:
            cell = WriteOnlyCell(ws, value=name)
            cell.font = bold
            cells.append(cell)
        ws.append(cells)
        return ws

    summary_ws = sheet("Summary", SUMMARY_HEADER, SUMMARY_WIDTHS)
    summary = Summary()
    result = ExportResult(path)
    used: set[str] = set()
    current: str | None = None
    ws: Any = None
    for row in source:
        if row.device != current:
            current = row.device
            ws = sheet(_sheet_title(current, used), HEADER, WIDTHS)
            result.devices.append(current)
        ws.append([row.values[name] for name in HEADER])
        summary.add(row)
        result.rows += 1
        if progress is not None and result.rows % PROGRESS_EVERY == 0:
            progress(result.rows)
    for line in summary.rows():
        summary_ws.append(line)
        result.summary_rows += 1
    book.save(path)
    return result


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters
