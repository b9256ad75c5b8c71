"""The sink's database: opening it (SQLite or PostgreSQL), migrating it, and writing what arrives.

Invariants:

* One punch, one row, ever: `punches.id` is the primary key and every insert is
  `ON CONFLICT DO NOTHING`, so a re-sent, re-delivered or replayed punch changes nothing.
* `write` commits everything one flush carries in one transaction; the caller acknowledges the
  messages and confirms the punches only after it returned (the commit is durable: SQLite runs
  in WAL mode with `synchronous=FULL`, PostgreSQL commits synchronously unless told otherwise).
* Latest wins for states: a device state replaces the stored one unless it is older (`as_of`);
  a gateway state replaces it (retained messages arrive in order per topic).
* Events are kept once (gateway, device, event, code, time); digests are replaced per terminal
  and a day whose count or digest changed goes back to `unchecked` for the reconciliation.
* The schema comes from the Alembic revisions only; `upgrade` runs them at every start.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event
from sqlalchemy.dialects import postgresql, sqlite

from punchgate.sync.contract import day_digest
from punchgate.sync.sink import tables as t

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_DB = "punchgate-sink.db"


def database_url(value: str) -> str:
    """A SQLAlchemy URL from what `--db` got: a URL, or a file path for SQLite."""
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut: then we confirm
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create(url: str) -> Engine:
    """An engine for `url` (see `database_url`), with SQLite set up for durable commits."""
    engine = sa.create_engine(database_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# Several sinks may start at once on one database: on PostgreSQL they take turns on this
# advisory lock (any constant; "punchgat" in ASCII), on SQLite a loser retries.
_MIGRATION_LOCK = 0x70756E6368676174


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision (Alembic, programmatically)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    for attempt in range(10):
        try:
            with engine.connect() as conn:
                postgres = conn.dialect.name == "postgresql"
                if postgres:
                    conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
                    conn.commit()
                try:
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
                    conn.commit()
                finally:
                    if postgres:
                        conn.rollback()
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                        conn.commit()
            return
        except sa.exc.OperationalError:
            if engine.dialect.name != "sqlite" or attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))  # another sink migrates the same file right now


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
        except sa.exc.DBAPIError:
            return None


# --- what a flush carries ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PunchBatch:
    base: str  # the gateway's base topic: its confirmations go to {base}/confirm
    gateway: str
    device: str
    seq: int
    records: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DeviceState:
    gateway: str
    device: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GatewayState:
    gateway: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    gateway: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Digests:
    gateway: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str


Item = PunchBatch | DeviceState | GatewayState | Event | Digests | DeadLetter


@dataclass
class Written:
    """What one committed flush stored."""

    punches_new: int = 0
    punches_repeated: int = 0
    dead_letters: int = 0
    confirm: dict[str, list[str]] = field(default_factory=dict)  # gateway base topic -> ids stored
    digests_changed: bool = False


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT (it has ON CONFLICT)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def punch_row(batch: PunchBatch, record: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {
        "id": record["id"],
        "gateway": batch.gateway,
        "device": batch.device,
        "serial": record["serial"],
        "user_id": record["user_id"],
        "local_time": record["local_time"],
        "local_day": record["local_time"][:10],
        "utc_time": _time(record["utc_time"]),
        "state_code": record["state"]["code"],
        "state_name": record["state"]["name"],
        "verify_code": record["verify"]["code"],
        "verify_name": record["verify"]["name"],
        "work_code": record["work_code"],
        "source": record["source"],
        "historical": record["historical"],
        "flags": ",".join(record["flags"]),
        "record": record,
        "batch_seq": batch.seq,
        "received_at": now,
    }


def write(conn: Connection, items: Sequence[Item], now: dt.datetime) -> Written:
    """Write `items` in the caller's transaction (commit it, then confirm)."""
    written = Written()
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, PunchBatch):
            ids = written.confirm.setdefault(item.base, [])
            for record in item.records:
                rows.setdefault(record["id"], punch_row(item, record, now))
                ids.append(record["id"])
    if rows:
        if conn.dialect.name == "postgresql":
            inserted = _insert_punches_by_copy(conn, list(rows.values()))
        else:
            statement = _insert(conn, t.punches).on_conflict_do_nothing(index_elements=["id"])
            inserted = len(conn.execute(statement.returning(t.punches.c.id), list(rows.values())).all())
        written.punches_new = inserted
        written.punches_repeated = sum(len(ids) for ids in written.confirm.values()) - inserted
    for item in items:
        if isinstance(item, DeviceState):
            _device_state(conn, item, now)
        elif isinstance(item, GatewayState):
            _gateway_state(conn, item, now)
        elif isinstance(item, Event):
            _event(conn, item, now)
        elif isinstance(item, Digests):
            _digests(conn, item, now)
            written.digests_changed = True
        elif isinstance(item, DeadLetter):
            conn.execute(
                t.dead_letters.insert(),
                {"topic": item.topic, "payload": item.payload, "reason": item.reason, "received_at": now},
            )
            written.dead_letters += 1
    return written


# PostgreSQL: the rows go in with COPY into a session-local staging table, then one
# INSERT ... SELECT ... ON CONFLICT DO NOTHING moves the new ones over. A multi-row INSERT of
# the same rows spends most of its time in the driver composing a statement with tens of
# thousands of parameters (~1,200 rows/s here); this runs near COPY speed (docs/scale-out.md).
_STAGING = sa.Table("punches_in", sa.MetaData(), *(sa.Column(c.name, c.type) for c in t.punches.columns))
_COLUMNS = [c.name for c in t.punches.columns]


def _insert_punches_by_copy(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert the rows not stored yet, in the caller's transaction; how many were new."""
    driver = conn.connection.driver_connection  # psycopg's, in the same transaction
    assert driver is not None
    statement = f"COPY punches_in ({', '.join(_COLUMNS)}) FROM STDIN"
    try:
        with driver.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS punches_in (LIKE punches) ON COMMIT DELETE ROWS")
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row([json.dumps(row[c]) if c == "record" else row[c] for c in _COLUMNS])
    except psycopg.Error as exc:  # as SQLAlchemy would raise it (DataError, OperationalError, ...)
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    move = (
        postgresql.insert(t.punches)
        .from_select(_COLUMNS, sa.select(*(_STAGING.c[c] for c in _COLUMNS)))
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(t.punches.c.id)
    )
    inserted = len(conn.execute(move).all())
    conn.execute(_STAGING.delete())  # the next flush in this transaction (one-by-one) starts empty
    return inserted


def _device_state(conn: Connection, item: DeviceState, now: dt.datetime) -> None:
    values = {
        "gateway": item.gateway,
        "device": item.device,
        "state": item.data["state"],
        "as_of": _time(item.data.get("as_of")),
        "payload": item.data,
        "received_at": now,
    }
    statement = _insert(conn, t.device_states)
    current = t.device_states.c.as_of
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["gateway", "device"],
            set_={k: statement.excluded[k] for k in ("state", "as_of", "payload", "received_at")},
            where=sa.or_(
                current.is_(None), statement.excluded.as_of.is_(None), current <= statement.excluded.as_of
            ),
        ),
        values,
    )


def _gateway_state(conn: Connection, item: GatewayState, now: dt.datetime) -> None:
    values = {"gateway": item.gateway, "state": item.data["state"], "payload": item.data, "received_at": now}
    statement = _insert(conn, t.gateway_states)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["gateway"],
            set_={k: statement.excluded[k] for k in ("state", "payload", "received_at")},
        ),
        values,
    )


def _event(conn: Connection, item: Event, now: dt.datetime) -> None:
    data = item.data
    values = {
        "gateway": item.gateway,
        "device": data["device"],
        "event": data["event"],
        "code": data["code"],
        "severity": data["severity"],
        "detail": data["detail"],
        "time": _time(data["time"]),
        "received_at": now,
    }
    conn.execute(_insert(conn, t.events).on_conflict_do_nothing(), values)


def _digests(conn: Connection, item: Digests, now: dt.datetime) -> None:
    data, d = item.data, t.digests.c
    gateway, device = item.gateway, data["device"]
    window = _insert(conn, t.digest_windows)
    conn.execute(
        window.on_conflict_do_update(
            index_elements=["gateway", "device"],
            set_={k: window.excluded[k] for k in ("first_day", "last_day", "as_of", "received_at")},
        ),
        {
            "gateway": gateway,
            "device": device,
            "first_day": data["first_day"],
            "last_day": data["last_day"],
            "as_of": _time(data["as_of"]),
            "received_at": now,
        },
    )
    days = {day["day"]: day for day in data["days"]}
    # Days the gateway no longer lists (out of its window, or none left) go.
    gone = sa.and_(d.gateway == gateway, d.device == device)
    conn.execute(t.digests.delete().where(gone, d.day.not_in(list(days)) if days else sa.true()))
    if not days:
        return
    statement = _insert(conn, t.digests)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["gateway", "device", "day"],
            set_={
                "count": statement.excluded["count"],
                "digest": statement.excluded.digest,
                "status": "unchecked",
                "central_count": None,
                "received_at": statement.excluded.received_at,
                "checked_at": None,
            },
            where=sa.or_(d.count != statement.excluded["count"], d.digest != statement.excluded.digest),
        ),
        [
            {
                "gateway": gateway,
                "device": device,
                "day": day["day"],
                "count": day["count"],
                "digest": day["digest"],
                "status": "unchecked",
                "received_at": now,
            }
            for day in days.values()
        ],
    )


# --- reconciliation --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DayCheck:
    gateway: str
    device: str
    day: str
    gateway_count: int  # 0: the gateway holds none for that day (lists no digest)
    central_count: int
    status: str  # match, missing, extra, differs

    @property
    def ok(self) -> bool:
        return self.status == "match"


def _status(gateway_count: int, gateway_digest: str | None, ids: list[str]) -> str:
    if len(ids) == gateway_count and (gateway_count == 0 or day_digest(ids) == gateway_digest):
        return "match"
    if len(ids) < gateway_count:
        return "missing"
    if len(ids) > gateway_count:
        return "extra"
    return "differs"


def _day_ids(conn: Connection, gateway: str, device: str, day: str) -> list[str]:
    p = t.punches.c
    query = sa.select(p.id).where(p.gateway == gateway, p.device == device, p.local_day == day)
    return list(conn.execute(query).scalars())


def recheck(conn: Connection, now: dt.datetime, *, everything: bool = False) -> list[DayCheck]:
    """Compare digest days with the punches table and store the outcome (`status`); only the
    days not known to match unless `everything`. Returns the days compared."""
    d = t.digests.c
    query = sa.select(d.gateway, d.device, d.day, d.count, d.digest)
    if not everything:
        query = query.where(d.status != "match")
    checks = []
    for gateway, device, day, count, digest in conn.execute(query).all():
        ids = _day_ids(conn, gateway, device, day)
        status = _status(count, digest, ids)
        conn.execute(
            t.digests.update()
            .where(d.gateway == gateway, d.device == device, d.day == day)
            .values(status=status, central_count=len(ids), checked_at=now)
        )
        checks.append(DayCheck(gateway, device, day, count, len(ids), status))
    return checks


def extra_days(conn: Connection) -> list[DayCheck]:
    """Days inside a gateway's digest window for which central holds punches and the gateway
    lists none (it holds none)."""
    p, w, d = t.punches.c, t.digest_windows.c, t.digests.c
    listed = sa.select(d.day).where(d.gateway == p.gateway, d.device == p.device, d.day == p.local_day)
    query = (
        sa.select(p.gateway, p.device, p.local_day, sa.func.count())
        .join(t.digest_windows, sa.and_(w.gateway == p.gateway, w.device == p.device))
        .where(p.local_day >= w.first_day, p.local_day <= w.last_day, ~sa.exists(listed))
        .group_by(p.gateway, p.device, p.local_day)
    )
    return [DayCheck(g, dev, day, 0, int(n), "extra") for g, dev, day, n in conn.execute(query).all()]


def mismatching_days(conn: Connection, *, older_than: dt.datetime) -> int:
    """Digest days that did not match at their last check and were received before `older_than`."""
    d = t.digests.c
    query = sa.select(sa.func.count()).where(d.status != "match", d.received_at < older_than)
    return int(conn.execute(query).scalar_one())


def counts(conn: Connection) -> dict[str, int]:
    """Rows per table (the check report and tests)."""
    return {
        table.name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        for table in (t.punches, t.events, t.device_states, t.gateway_states, t.digests, t.dead_letters)
    }
