"""Whether a start must run `PRAGMA quick_check` on the buffer, or may trust the last stop.

quick_check reads the whole file, about 2 s a gigabyte from the page cache and a card's read
speed from a cold SD card. A site's buffer of 15 million punches (5,000 terminals of 3,000
records) is 10 GB: checked at every start, a restart spent half a minute of CPU before its
first poll. So a clean stop records, in the companion file, how it left the file: size, inode,
modification time, and when the file last passed quick_check (`CleanStop`). The next start
skips the check only when the file is exactly as that stop left it, no WAL beside it, and the
last check is less than `QUICK_CHECK_EVERY` old (`check_due`). Everything else runs it as
before: a crash (its WAL is left behind), a file written, replaced or touched since, a record
that cannot be read, a check a week old.

What this gives up: damage that changes neither size nor modification time while the
gateway is stopped (a disk corrupting a page silently) waits for the weekly check, for SQLite
to meet the page, or for `punchgate buffer check`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from punchgate.sync.buffer_paths import BufferPaths

QUICK_CHECK_EVERY: Final = 7 * 86400.0  # seconds: the longest a file goes unchecked at start
# A record written in the same clock tick as the file's last write cannot tell a later write
# in that tick apart: the stop writes it again a tick later (`racy` below), at most this often.
_RECORD_TRIES: Final = 5
_TICK: Final = 0.005


@dataclass(frozen=True, slots=True)
class CleanStop:
    """The buffer file as a clean stop left it, and when it last passed quick_check."""

    size: int
    inode: int
    mtime_ns: int
    checked: float  # unix seconds

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "inode": self.inode, "mtime_ns": self.mtime_ns, "checked": self.checked}

    @staticmethod
    def from_json(value: object) -> CleanStop | None:
        """The record as the companion holds it; None when absent or not understood."""
        if not isinstance(value, dict):
            return None
        size, inode, mtime, checked = (value.get(k) for k in ("size", "inode", "mtime_ns", "checked"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, inode, mtime)):
            return None
        if not isinstance(checked, int | float) or isinstance(checked, bool):
            return None
        assert isinstance(size, int) and isinstance(inode, int) and isinstance(mtime, int)
        return CleanStop(size, inode, mtime, float(checked))


def read_clean_stop(companion: Path) -> CleanStop | None:
    """The clean stop the companion records; None when it records none or cannot be read
    (the start then checks the file, as it would have anyway)."""
    try:
        data = json.loads(companion.read_text())
    except (OSError, ValueError):
        return None
    return CleanStop.from_json(data.get("clean_stop")) if isinstance(data, dict) else None


def check_due(paths: BufferPaths, clean: CleanStop | None, *, now: float) -> str | None:
    """Why this start must run quick_check (a word for the log), or None when the last clean
    stop vouches for the file. Looked at before anything opens the file."""
    if clean is None:
        return "no_clean_stop"
    if paths.wal.exists():
        return "wal_left"
    try:
        file, companion = paths.db.stat(), paths.companion.stat()
    except OSError:
        return "file_changed"
    if (file.st_size, file.st_ino, file.st_mtime_ns) != (clean.size, clean.inode, clean.mtime_ns):
        return "file_changed"
    if companion.st_mtime_ns <= file.st_mtime_ns:
        return "file_changed"  # recorded in the tick of the file's last write: cannot tell
    if not 0 <= now - clean.checked < QUICK_CHECK_EVERY:
        return "check_due"
    return None


def as_left(paths: BufferPaths, checked: float) -> CleanStop | None:
    """The file as it is now, once the last connection closed it; None while a WAL is still
    beside it (another connection holds it open: not a clean stop)."""
    if paths.wal.exists():
        return None
    file = paths.db.stat()
    return CleanStop(file.st_size, file.st_ino, file.st_mtime_ns, checked)


def record(paths: BufferPaths, write: Callable[[CleanStop], None], checked: float) -> bool:
    """Record the clean stop: `write(clean_stop)` writes the companion with it. Written again
    a tick later while the companion is not newer than the file (see `check_due`). True when
    recorded so that the next start may trust it."""
    for _ in range(_RECORD_TRIES):
        stop = as_left(paths, checked)
        if stop is None:
            return False
        write(stop)
        if paths.companion.stat().st_mtime_ns > stop.mtime_ns:
            return True
        time.sleep(_TICK)
    return False
