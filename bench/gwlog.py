"""Reading the gateway's JSON log lines (`--log-format json`) for the events a benchmark needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def events(path: Path, name: str) -> list[dict[str, Any]]:
    """Every log record with `event == name`, in order; lines that are not JSON are skipped."""
    found: list[dict[str, Any]] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return found
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill, or still being written
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found
