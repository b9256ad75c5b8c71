"""Writing an export as CSV: UTF-8 with a byte order mark, ISO 8601 times, one row per punch."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from typing import Any

from punchgate.sync.export_model import HEADER, PROGRESS_EVERY, Progress, Row


def _csv_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _utc_csv(values: dict[str, Any]) -> list[Any]:
    out = []
    for name in HEADER:
        value = values[name]
        if isinstance(value, dt.datetime) and name != "local_time":
            out.append(value.isoformat() + "Z")
        else:
            out.append(_csv_value("" if value is None else value))
    return out


def write_csv(source: Iterator[Row], target: Any, progress: Progress | None = None) -> int:
    """CSV, UTF-8 with a byte order mark (so Excel reads names right), ISO 8601 times
    (local without offset, UTC with Z). Returns the rows written."""
    target.write("\ufeff")
    writer = csv.writer(target, lineterminator="\r\n")
    writer.writerow(HEADER)
    written = 0
    for row in source:
        writer.writerow(_utc_csv(row.values))
        written += 1
        if progress is not None and written % PROGRESS_EVERY == 0:
            progress(written)
    return written
