"""The buffer's identity, kept twice: a record inside the file and a companion file beside it.

Why: an SQLite file that was truncated, deleted, replaced by an older copy or copied from
another gateway can still open "fine", and the store would start over or carry on with the
wrong punches without a word. Two records that must agree make that visible.

* The identity record (table `identity`, migration v3): the gateway id that owns the file
  (NULL until a gateway opens it with its configured id), when the record was made, and
  `stored`, the number of punches ever inserted. `stored` grows in the same transaction as
  every insert and never shrinks (purges leave it), so it only goes back if the file does.
* The companion `buffer.db.id` (small JSON: gateway id, created, stored, when written; after
  a clean stop also how that stop left the file, `buffer_clean_stop`), replaced atomically
  (temp file, fsync, rename, fsync of the folder), 0600.

Invariants:

* The companion never claims more than the file holds: it is written only with a `stored`
  value that has already been committed (fsynced, `synchronous=FULL`) to the file. It may lag
  behind (it is written at most every `COMPANION_INTERVAL` seconds, and at close), which only
  delays what it can prove, never raises a false alarm.
* So, at open: the file's `stored` below the companion's means the file went back in time
  (replaced by an older copy, or its WAL lost). A shortfall of up to `ROLLBACK_TOLERANCE`
  punches is reported as a warning, not a refusal: a disk that does not honour flushes can
  lose the last commits before a power cut, and stopping a site's punch collection for that
  would do more harm than good. A different `created` means a different file; a different
  gateway id means another gateway's file. Each of those refuses the start.
* A file without a companion (first start after the upgrade that added it, or a deleted
  companion) gets one, with a warning when the file was not new. A companion without a file
  refuses the start: the file was there and is gone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection

from punchgate.sync import buffer_schema
from punchgate.sync.buffer_clean_stop import CleanStop
from punchgate.sync.buffer_inspect import FileState
from punchgate.sync.buffer_paths import PRIVATE_FILE, BufferPaths, fsync_folder, match_owner

log = structlog.get_logger(__name__)

COMPANION_FORMAT = 1
# Seconds between companion writes while punches are stored (each write costs two fsyncs).
COMPANION_INTERVAL = 1.0
# A file this many punches (or fewer) behind its companion is warned about, not refused.
ROLLBACK_TOLERANCE = 100

_ID = buffer_schema.identity
IDC = _ID.c
_READ_SQL = f"SELECT {IDC.gateway_id}, {IDC.created}, {IDC.stored} FROM {_ID.name}"
_COUNT_SQL = f"UPDATE {_ID.name} SET {IDC.stored.name} = {IDC.stored} + ?"
_CLAIM_SQL = f"UPDATE {_ID.name} SET {IDC.gateway_id.name} = ? WHERE {IDC.gateway_id} IS NULL"
_SET_SQL = f"UPDATE {_ID.name} SET {IDC.gateway_id.name} = ?, {IDC.created.name} = ?, {IDC.stored.name} = ?"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a buffer file belongs to, since when, and how many punches were ever stored in it."""

    gateway_id: str | None
    created: str
    stored: int

    def describe(self) -> str:
        owner = f"gateway {self.gateway_id!r}" if self.gateway_id else "no gateway yet"
        return f"{owner}, created {self.created}, {self.stored} punches stored"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong with the buffer: `problem` (a BufferRefusedError code), what, and
    whether the daemon must refuse to start on it (otherwise it is a warning)."""

    problem: str
    detail: str
    refuse: bool


def now_text() -> str:
    """The current UTC time the way the identity records it (ISO 8601, milliseconds, Z)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- the record in the file ---------------------------------------------------------------------
def read_identity(conn: Connection) -> Identity | None:
    """The file's identity record; None when the file has none."""
    row = conn.exec_driver_sql(_READ_SQL).fetchone()
    if row is None:
        return None
    gateway_id, created, stored = row
    return Identity(None if gateway_id is None else str(gateway_id), str(created), int(stored))


def claim(conn: Connection, gateway_id: str) -> bool:
    """Record `gateway_id` as the owner of a file nobody has claimed yet; True when it did."""
    return int(conn.exec_driver_sql(_CLAIM_SQL, (gateway_id,)).rowcount) > 0


def count_stored(conn: Connection, inserted: int) -> None:
    """Add `inserted` punches to `stored`, in the caller's insert transaction."""
    conn.exec_driver_sql(_COUNT_SQL, (inserted,))


def set_identity(conn: Connection, identity: Identity) -> None:
    """Replace the identity record (a recovered file starts a new identity)."""
    conn.exec_driver_sql(_SET_SQL, (identity.gateway_id, identity.created, identity.stored))


# --- the companion file -------------------------------------------------------------------------
class CompanionError(Exception):
    """The companion file exists but cannot be read as one."""


def read_companion(path: Path) -> Identity | None:
    """The identity the companion file records; None when there is no companion file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CompanionError(f"{path}: cannot read it: {exc}") from exc
    try:
        data: Any = json.loads(text)
        gateway_id, created, stored = data["gateway_id"], data["created"], data["stored"]
        if not (
            (gateway_id is None or isinstance(gateway_id, str))
            and isinstance(created, str)
            and isinstance(stored, int)
        ):
            raise TypeError("a field has the wrong type")
    except (ValueError, TypeError, KeyError) as exc:
        raise CompanionError(f"{path}: not a buffer companion file ({exc})") from exc
    return Identity(gateway_id, created, stored)


def write_companion(paths: BufferPaths, identity: Identity, clean_stop: CleanStop | None = None) -> None:
    """Replace the companion atomically and durably (temp file, fsync, rename, folder fsync).
    `clean_stop`: written only by a clean stop (`buffer_clean_stop`); any other write drops it."""
    record: dict[str, Any] = {
        "format": COMPANION_FORMAT,
        "buffer": paths.db.name,
        "gateway_id": identity.gateway_id,
        "created": identity.created,
        "stored": identity.stored,
        "written": now_text(),
    }
    if clean_stop is not None:
        record["clean_stop"] = clean_stop.to_json()
    temp = paths.companion.with_name(paths.companion.name + ".tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)
            os.write(fd, (json.dumps(record, indent=1) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        match_owner(temp, paths.folder)
        os.replace(temp, paths.companion)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(paths.folder)


class CompanionWriter:
    """Keeps the companion up with the file's `stored` count, at most every `interval` seconds.

    `update` is called after each commit that changed the count (with the committed value),
    `flush` at close. Thread-safe; a write already in progress makes a concurrent `update`
    skip (the next one catches up), so no caller ever waits on another's fsync. A write that
    fails (disk full, read-only folder) is logged once and retried with the next update; it
    never fails the caller, whose punches are committed already: a companion that lags can
    only miss a rollback, never invent one.
    """

    def __init__(
        self, paths: BufferPaths, identity: Identity, *, interval: float = COMPANION_INTERVAL
    ) -> None:
        self.paths = paths
        self.interval = interval
        self._identity = identity  # what the companion says now
        self._stored = identity.stored  # the latest committed count
        self._last_write = time.monotonic()
        self._lock = threading.Lock()
        self._failing = False
        self.writes = 0

    @property
    def written(self) -> Identity:
        return self._identity

    def update(self, stored: int) -> None:
        """The file has committed `stored`; write it out if the last write is old enough."""
        self._stored = max(self._stored, stored)
        if time.monotonic() - self._last_write >= self.interval:
            self._write(blocking=False)

    def flush(self) -> None:
        """Write the latest committed count now if the companion is behind it."""
        self._write(blocking=True)

    def _write(self, *, blocking: bool) -> None:
        if not self._lock.acquire(blocking=blocking):
            return
        try:
            stored = self._stored
            if stored == self._identity.stored:
                return
            identity = Identity(self._identity.gateway_id, self._identity.created, stored)
            self._last_write = time.monotonic()
            try:
                write_companion(self.paths, identity)
            except OSError as exc:
                if not self._failing:
                    log.warning(
                        "buffer_companion_write_failed", path=str(self.paths.companion), error=str(exc)
                    )
                self._failing = True
                return
            if self._failing:
                log.info("buffer_companion_written_again", path=str(self.paths.companion), stored=stored)
            self._failing = False
            self._identity = identity
            self.writes += 1
        finally:
            self._lock.release()


# --- agreement ----------------------------------------------------------------------------------
def file_findings(paths: BufferPaths, state: FileState, companion: Identity | None) -> list[Finding]:
    """What is wrong with the file as found, before SQLite opens it ([] when nothing is)."""
    says = (
        "" if companion is None else f" (its companion {paths.companion.name} says: {companion.describe()})"
    )
    if not state.exists:
        if companion is not None:
            return [Finding("missing", f"the file is missing{says}", refuse=True)]
        if state.wal_size:
            return [Finding("missing", f"the file is missing but its {paths.wal.name} is there", refuse=True)]
        return []
    if state.problem is not None:
        detail = state.detail + says
        if state.problem == "empty" and companion is None:
            detail += "; if this is a new install and nothing was ever stored, delete the empty file"
        return [Finding(state.problem, detail, refuse=True)]
    return []


def identity_findings(
    db: Identity | None, companion: Identity | None, gateway_id: str | None, *, companion_name: str
) -> list[Finding]:
    """How the file's identity agrees with its companion and the configured gateway id."""
    if db is None:
        return [Finding("no_identity", "the file has no identity record (damaged?)", refuse=True)]
    found: list[Finding] = []
    if gateway_id is not None and db.gateway_id is not None and db.gateway_id != gateway_id:
        found.append(
            Finding(
                "other_gateway",
                f"the file belongs to gateway {db.gateway_id!r}, this gateway is {gateway_id!r} "
                "(copied from another gateway? if this gateway was renamed, `punchgate buffer "
                "recover` moves its punches to a file of the new name)",
                refuse=True,
            )
        )
    if companion is None:
        return found
    if (
        companion.gateway_id is not None
        and db.gateway_id is not None
        and companion.gateway_id != db.gateway_id
    ):
        found.append(
            Finding(
                "other_gateway",
                f"the file belongs to gateway {db.gateway_id!r} but {companion_name} beside it "
                f"says {companion.gateway_id!r}: it was copied from another gateway",
                refuse=True,
            )
        )
    if companion.created != db.created:
        found.append(
            Finding(
                "replaced",
                f"the file was created {db.created}, but {companion_name} records the one created "
                f"{companion.created}: the file was replaced by another",
                refuse=True,
            )
        )
    elif db.stored < companion.stored:
        missing = companion.stored - db.stored
        far = missing > ROLLBACK_TOLERANCE
        found.append(
            Finding(
                "older_copy",
                f"the file has stored {db.stored} punches, {missing} fewer than the {companion.stored} "
                f"{companion_name} recorded"
                + (
                    ": it was replaced by an older copy (or lost its -wal file)"
                    if far
                    else ": the last commits before a crash were lost (a disk that ignores flushes?)"
                ),
                refuse=far,
            )
        )
    return found
