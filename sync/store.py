"""The durable buffer: every punch is committed (fsynced) here before anyone is told it exists.

SQLite in WAL mode with `synchronous=FULL`: each commit fsyncs the WAL, so a punch that
`add_punches` returned survives a power cut. The API is synchronous and thread-safe; async
callers wrap it in `asyncio.to_thread`. Writes are serialised by one lock (SQLite has a
single writer anyway, and taking the lock in-process avoids busy-waiting on file locks).

Undelivered punches are never evicted: when the pending count reaches `max_pending` or free
disk drops below `min_free_disk_mb`, new punches are refused with `BufferFullError` /
`DiskLowError` and the workers stop reading terminals (which still hold their records).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.pool import ConnectionPoolEntry

from punchgate.sync import migrations
from punchgate.sync.contract import record_json
from punchgate.sync.faults import GatewayFault
from punchgate.sync.records import Punch
from punchgate.sync.settings import BufferSettings

log = structlog.get_logger(__name__)

# SQLite's bound-parameter limit is 32766 on current builds; stay well below it.
_IN_CHUNK = 900
# Batch sequence numbers are reserved this many at a time so a publish costs no extra commit;
# after a crash the next seq jumps past the whole reserved block (gaps are allowed, repeats not).
_SEQ_BLOCK = 1000
# Once full, accept again only when this fraction of max_pending is free, so the fault does
# not flap on every delivered batch.
_RESUME_RATIO = 0.9

_metadata = MetaData()
punches_table = Table(
    "punches",
    _metadata,
    Column("pk", Integer, primary_key=True),
    Column("id", String, nullable=False),
    Column("device", String, nullable=False),
    Column("device_serial", String, nullable=False),
    Column("user_id", String, nullable=False),
    Column("local_time", String, nullable=False),
    Column("utc_time", String, nullable=False),
    Column("utc_offset_seconds", Integer, nullable=False),
    Column("state", Integer, nullable=False),
    Column("state_name", String),
    Column("verify", Integer, nullable=False),
    Column("verify_name", String),
    Column("work_code", Integer, nullable=False),
    Column("source", String, nullable=False),
    Column("historical", Integer, nullable=False),
    Column("flags", String, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("payload", String, nullable=False),
    Column("stored_at", Float, nullable=False),
    Column("delivered_at", Float),
)
batch_seq_table = Table(
    "batch_seq",
    _metadata,
    Column("device", String, primary_key=True),
    Column("reserved_until", Integer, nullable=False),
)
device_meta_table = Table(
    "device_meta",
    _metadata,
    Column("device", String, primary_key=True),
    Column("data", String, nullable=False),
    Column("updated_at", Float, nullable=False),
)


class StoreError(Exception):
    """The buffer cannot be used (bad file, schema from the future, not WAL-capable)."""


class StoreRefusedError(StoreError):
    """New punches are refused. `fault` is the code; `stored` lists the ids of the call's
    punches that did fit under the limit and were stored before the refusal (oldest first)."""

    fault = GatewayFault.BUFFER_FULL

    def __init__(self, message: str, *, stored: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stored = list(stored)


class BufferFullError(StoreRefusedError):
    fault = GatewayFault.BUFFER_FULL


class DiskLowError(StoreRefusedError):
    fault = GatewayFault.DISK_LOW


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One undelivered punch as the forwarder needs it: no ORM object, just the rendered JSON."""

    pk: int
    device: str
    source: str
    payload: str


def _configure_connection(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself: pysqlite's implicit transactions
    # would otherwise run DDL (migrations) outside any transaction.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 30000")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"SQLite refused WAL mode (got {mode!r}); buffer on a network filesystem?")
        # FULL: the WAL is fsynced at every commit, so "stored" means "survives power loss".
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _begin(conn: Connection) -> None:
    # Writers take the write lock up front (IMMEDIATE) so a transaction that reads then
    # writes can never fail with SQLITE_BUSY_SNAPSHOT; readers stay DEFERRED and never block
    # writers (WAL).
    mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


class Store:
    """The punch buffer. Create with `Store.open(settings)`; call `close()` when done."""

    def __init__(self, engine: Engine, settings: BufferSettings) -> None:
        self._engine = engine
        self._writer = engine.execution_options(write=True)
        self.settings = settings
        self.path = settings.path
        self._write_lock = threading.RLock()
        self._seq: dict[str, tuple[int, int]] = {}  # device -> (next seq, reserved until)
        self._full = False
        self._disk_low = False
        with engine.connect() as conn:
            self._pending = int(
                conn.execute(
                    select(func.count())
                    .select_from(punches_table)
                    .where(punches_table.c.delivered_at.is_(None))
                ).scalar_one()
            )

    # --- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: BufferSettings) -> Store:
        """Open (creating or migrating) the buffer file."""
        path = Path(settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{path}")
        event.listen(engine, "connect", _configure_connection)
        event.listen(engine, "begin", _begin)
        try:
            with engine.execution_options(write=True).begin() as conn:
                before, after = migrations.migrate(conn)
        except migrations.SchemaTooNewError as exc:
            engine.dispose()
            raise StoreError(f"{path}: {exc}") from exc
        except Exception as exc:
            engine.dispose()
            raise StoreError(f"{path}: cannot open the buffer: {exc}") from exc
        if before != after:
            log.info("buffer_schema_migrated", path=str(path), from_version=before, to_version=after)
        store = cls(engine, settings)
        log.info("buffer_opened", path=str(path), pending=store._pending)
        return store

    def close(self) -> None:
        self._engine.dispose()

    # --- punches in -----------------------------------------------------------------------
    def known_ids(self, ids: Iterable[str]) -> set[str]:
        """The subset of `ids` already in the buffer (pending or delivered)."""
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        query = select(punches_table.c.id).where(punches_table.c.id.in_(bindparam("ids", expanding=True)))
        with self._engine.connect() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                found.update(conn.execute(query, {"ids": wanted[start : start + _IN_CHUNK]}).scalars())
        return found

    def add_punches(self, punches: Sequence[Punch]) -> list[str]:
        """Store new punches durably; returns the ids actually inserted (known ids are a no-op).

        Below the disk minimum nothing is stored (`DiskLowError`). Near `max_pending` the
        punches that fit are stored, in the order given (oldest first), and `BufferFullError`
        reports the rest refused, with `.stored` naming what did go in: the buffer fills up to
        its limit, and a terminal read larger than the limit still makes progress as it drains.
        """
        if not punches:
            return []
        with self._write_lock:
            unique = list({p.id: p for p in punches}.values())
            known = self.known_ids(p.id for p in unique)
            new = [p for p in unique if p.id not in known]
            if not new:
                return []
            self._check_disk()
            room = self._room_for(len(new))
            fits, refused = new[:room], new[room:]
            if fits:
                now = time.time()
                rows = [_punch_row(p, now) for p in fits]
                with self._writer.begin() as conn:
                    # Plain executemany on the driver: SQLAlchemy's per-row parameter
                    # processing costs more than SQLite itself at thousands of rows per commit.
                    conn.exec_driver_sql(_INSERT_SQL, rows)
                self._pending += len(fits)
            if refused:
                self._refuse(len(refused), stored=[p.id for p in fits])
        return [p.id for p in fits]

    def _check_disk(self) -> None:
        free_mb = shutil.disk_usage(self.path.parent).free // (1024 * 1024)
        low = free_mb < self.settings.min_free_disk_mb
        if low != self._disk_low:
            self._disk_low = low
            log.warning("buffer_disk_low" if low else "buffer_disk_ok", free_mb=free_mb)
        if low:
            raise DiskLowError(
                f"refusing new punches: {free_mb} MB free on {self.path.parent}, "
                f"minimum is {self.settings.min_free_disk_mb} MB"
            )

    def _room_for(self, incoming: int) -> int:
        """How many of `incoming` new punches may be stored now (0 while full)."""
        self._update_full()
        if self._full:
            return 0
        return max(0, min(incoming, self.settings.max_pending - self._pending))

    def _refuse(self, refused: int, *, stored: list[str]) -> None:
        limit = self.settings.max_pending
        if not self._full:
            self._full = True
            log.warning("buffer_full", pending=self._pending, max_pending=limit)
        raise BufferFullError(
            f"refusing {refused} new punches: {self._pending} undelivered punches, "
            f"limit is {limit}; accepting again below {self._resume_mark()}",
            stored=stored,
        )

    def _resume_mark(self) -> int:
        return int(self.settings.max_pending * _RESUME_RATIO)

    def _update_full(self) -> None:
        if self._full and self._pending <= self._resume_mark():
            self._full = False
            log.info("buffer_full_cleared", pending=self._pending)

    def active_faults(self) -> frozenset[str]:
        """`buffer_full` / `disk_low` while the store refuses punches for that reason."""
        with self._write_lock:
            self._update_full()
            faults = set()
            if self._full:
                faults.add(GatewayFault.BUFFER_FULL)
            if self._disk_low:
                faults.add(GatewayFault.DISK_LOW)
            return frozenset(faults)

    # --- the outbox ---------------------------------------------------------------------------
    def pending_count(self, device: str | None = None) -> int:
        if device is None:
            return self._pending
        query = select(func.count()).where(
            punches_table.c.delivered_at.is_(None), punches_table.c.device == device
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def pending_devices(self) -> dict[str, int]:
        """Undelivered punches per device."""
        query = (
            select(punches_table.c.device, func.count())
            .where(punches_table.c.delivered_at.is_(None))
            .group_by(punches_table.c.device)
        )
        with self._engine.connect() as conn:
            return {device: int(count) for device, count in conn.execute(query)}

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest undelivered punch was stored; None when nothing is pending."""
        query = (
            select(punches_table.c.stored_at)
            .where(punches_table.c.delivered_at.is_(None))
            .order_by(punches_table.c.pk)
            .limit(1)
        )
        with self._engine.connect() as conn:
            stored_at = conn.execute(query).scalar_one_or_none()
        return None if stored_at is None else max(0.0, time.time() - stored_at)

    def pending_batch(self, limit: int, *, after: int = 0) -> list[PendingRow]:
        """Up to `limit` undelivered punches with pk > `after`, oldest first (all devices)."""
        query = (
            "SELECT pk, device, source, payload FROM punches"
            " WHERE delivered_at IS NULL AND pk > ? ORDER BY pk LIMIT ?"
        )
        with self._engine.connect() as conn:
            # One fetchall: iterating the result costs a DB-API fetchone per row (py-spy).
            rows = conn.exec_driver_sql(query, (after, limit)).fetchall()
        return [PendingRow(pk, device, source, payload) for pk, device, source, payload in rows]

    def mark_delivered(self, pks: Sequence[int]) -> int:
        """Mark exactly these rows delivered, in one transaction; returns how many changed."""
        if not pks:
            return 0
        now = time.time()
        changed = 0
        with self._write_lock:
            with self._writer.begin() as conn:
                # Hot path: plain SQL with one placeholder per row, no statement compilation.
                for start in range(0, len(pks), 30000):
                    part = list(pks[start : start + 30000])
                    marks = ",".join("?" * len(part))
                    sql = (
                        f"UPDATE punches SET delivered_at = ? WHERE delivered_at IS NULL AND pk IN ({marks})"
                    )
                    changed += conn.exec_driver_sql(sql, (now, *part)).rowcount
            self._pending -= changed
            self._update_full()
        return changed

    def requeue_delivered(self, *, since: float, device: str | None = None) -> int:
        """Make punches delivered at or after `since` (unix time) pending again, to send them
        once more (replay after a broker lost what it had acknowledged). Ids make the
        repeats harmless at central. Returns how many rows went back to pending."""
        sql = "UPDATE punches SET delivered_at = NULL WHERE delivered_at >= ?"
        params: tuple[Any, ...] = (since,)
        if device is not None:
            sql += " AND device = ?"
            params += (device,)
        with self._write_lock:
            with self._writer.begin() as conn:
                changed = int(conn.exec_driver_sql(sql, params).rowcount)
            self._pending += changed
        log.info("buffer_requeued", punches=changed, since=since, device=device)
        return changed

    def next_batch_seq(self, device: str) -> int:
        """The next per-device batch number: strictly increasing across restarts, gaps allowed."""
        with self._write_lock:
            current = self._seq.get(device)
            if current is None or current[0] > current[1]:
                current = self._reserve_seq_block(device)
            seq, reserved = current
            self._seq[device] = (seq + 1, reserved)
            return seq

    def next_batch_seqs(self, devices: Sequence[str]) -> list[int]:
        """`next_batch_seq` for each entry in order (one call per read window, not per batch)."""
        with self._write_lock:
            return [self.next_batch_seq(device) for device in devices]

    def _reserve_seq_block(self, device: str) -> tuple[int, int]:
        t = batch_seq_table
        with self._writer.begin() as conn:
            query = select(t.c.reserved_until).where(t.c.device == device)
            previous = conn.execute(query).scalar_one_or_none()
            start = (previous or 0) + 1
            reserved = start + _SEQ_BLOCK - 1
            if previous is None:
                conn.execute(t.insert().values(device=device, reserved_until=reserved))
            else:
                conn.execute(t.update().where(t.c.device == device).values(reserved_until=reserved))
        return start, reserved

    def purge_delivered(self, older_than_days: float | None = None) -> int:
        """Delete punches delivered more than N days ago (default: the configured retention)."""
        days = self.settings.retention_days if older_than_days is None else older_than_days
        cutoff = time.time() - days * 86400
        t = punches_table
        with self._write_lock, self._writer.begin() as conn:
            deleted = conn.execute(
                t.delete().where(t.c.delivered_at.is_not(None), t.c.delivered_at < cutoff)
            ).rowcount
        if deleted:
            log.info("buffer_purged", deleted=deleted, retention_days=days)
        return int(deleted)

    def punch_count(self) -> int:
        """All punches held, delivered or not."""
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(punches_table)).scalar_one())

    def delivered_ids(self) -> set[str]:
        """Ids of every delivered punch still held (for reconciliation and tests)."""
        query = select(punches_table.c.id).where(punches_table.c.delivered_at.is_not(None))
        with self._engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def all_ids(self) -> set[str]:
        with self._engine.connect() as conn:
            return set(conn.execute(select(punches_table.c.id)).scalars())

    # --- per-device memory ----------------------------------------------------------------
    def get_device_meta(self, device: str) -> dict[str, Any]:
        """What the gateway remembers about a terminal (last serial, last record count); {} if none."""
        t = device_meta_table
        with self._engine.connect() as conn:
            text = conn.execute(select(t.c.data).where(t.c.device == device)).scalar_one_or_none()
        if text is None:
            return {}
        value = json.loads(text)
        return value if isinstance(value, dict) else {}

    def set_device_meta(self, device: str, data: dict[str, Any]) -> None:
        """Replace what is remembered about a terminal (JSON-serialisable values only)."""
        from sqlalchemy.dialects.sqlite import insert

        text = json.dumps(data, sort_keys=True, default=str)
        t = device_meta_table
        statement = insert(t).values(device=device, data=text, updated_at=time.time())
        statement = statement.on_conflict_do_update(
            index_elements=[t.c.device], set_={"data": text, "updated_at": time.time()}
        )
        with self._write_lock, self._writer.begin() as conn:
            conn.execute(statement)


_INSERT_COLUMNS = (
    "id, device, device_serial, user_id, local_time, utc_time, utc_offset_seconds, state, state_name, "
    "verify, verify_name, work_code, source, historical, flags, raw, payload, stored_at"
)
_INSERT_SQL = f"INSERT INTO punches ({_INSERT_COLUMNS}) VALUES ({', '.join('?' * 18)})"


def _punch_row(punch: Punch, now: float) -> tuple[Any, ...]:
    return (
        punch.id,
        punch.device,
        punch.device_serial,
        punch.user_id,
        punch.local_time.isoformat(),
        punch.utc_time.isoformat(),
        punch.utc_offset_seconds,
        punch.state,
        punch.state_name,
        punch.verify,
        punch.verify_name,
        punch.work_code,
        punch.source,
        int(punch.historical),
        ",".join(punch.flags),
        punch.raw,
        record_json(punch),
        now,
    )
