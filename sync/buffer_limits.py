"""The buffer's limits: when new punches are refused, and the faults that say so.

Design: undelivered punches are never evicted to make room. When the pending count reaches
`max_pending`, or free disk drops below `min_free_disk_mb`, new punches are refused with
`BufferFullError` / `DiskLowError` and the workers stop reading terminals (which still hold
their records). Invariants:

* `pending` mirrors the number of undelivered rows in the file: it is read from the file at
  open, then adjusted by the store under its write lock by exactly the row counts its
  committed statements report (inserted, marked delivered, re-queued).
* Below the disk minimum nothing is stored. Near `max_pending` the punches that fit are stored
  (the caller passes them oldest first) and only the rest are refused, so a terminal read larger
  than the room left still makes progress as the buffer drains.
* Hysteresis: once full, the buffer accepts again only when `pending` is at or below
  `_RESUME_RATIO` of `max_pending`, so the fault does not flap on every delivered batch.
* Each fault is logged once when it starts and once when it clears.

Not thread-safe on its own: the store calls it under its write lock.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NoReturn

import structlog

from punchgate.sync.buffer_errors import BufferFullError, DiskLowError
from punchgate.sync.faults import GatewayFault
from punchgate.sync.settings import BufferSettings

log = structlog.get_logger(__name__)

# Once full, accept again only when this fraction of max_pending is free.
_RESUME_RATIO = 0.9


class Limits:
    """Pending-count accounting and the `buffer_full` / `disk_low` refusals."""

    def __init__(self, settings: BufferSettings, *, pending: int) -> None:
        self.settings = settings
        self.pending = pending
        # Staged punches (`buffer_staging`) are not pending yet, but they will be: they take
        # room like pending ones, so the move never has to refuse what was answered `OK`.
        self.staged = 0
        self._full = False
        self._disk_low = False

    def check_disk(self, directory: Path) -> None:
        """Raise `DiskLowError` while free space on `directory`'s filesystem is below the minimum."""
        free_mb = shutil.disk_usage(directory).free // (1024 * 1024)
        low = free_mb < self.settings.min_free_disk_mb
        if low != self._disk_low:
            self._disk_low = low
            log.warning("buffer_disk_low" if low else "buffer_disk_ok", free_mb=free_mb)
        if low:
            raise DiskLowError(
                f"refusing new punches: {free_mb} MB free on {directory}, "
                f"minimum is {self.settings.min_free_disk_mb} MB"
            )

    def room_for(self, incoming: int) -> int:
        """How many of `incoming` new punches may be stored now (0 while full)."""
        self.update_full()
        if self._full:
            return 0
        return max(0, min(incoming, self.settings.max_pending - self.pending - self.staged))

    def refuse(self, refused: int, *, stored: list[str]) -> NoReturn:
        """Enter (or stay in) `buffer_full` and raise for the `refused` punches."""
        limit = self.settings.max_pending
        if not self._full:
            self._full = True
            log.warning("buffer_full", pending=self.pending, max_pending=limit)
        raise BufferFullError(
            f"refusing {refused} new punches: {self.pending} undelivered punches, "
            f"limit is {limit}; accepting again below {self.resume_mark()}",
            stored=stored,
        )

    def resume_mark(self) -> int:
        return int(self.settings.max_pending * _RESUME_RATIO)

    def update_full(self) -> None:
        """Leave `buffer_full` once enough has drained."""
        if self._full and self.pending + self.staged <= self.resume_mark():
            self._full = False
            log.info("buffer_full_cleared", pending=self.pending, staged=self.staged)

    def active_faults(self) -> frozenset[str]:
        self.update_full()
        faults = set()
        if self._full:
            faults.add(GatewayFault.BUFFER_FULL)
        if self._disk_low:
            faults.add(GatewayFault.DISK_LOW)
        return frozenset(faults)
