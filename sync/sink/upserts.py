"""Writing states, events and digests: latest wins, kept once, replaced per terminal.

* A device state replaces the stored one unless it is older (`as_of`); a gateway state
  replaces it (retained messages arrive in order per topic).
* Events are kept once (gateway, device, event, code, time).
* Digests are replaced per terminal, and a day whose count or digest changed goes back to
  `unchecked` for the reconciliation (`reconcile`).

Each runs in the caller's transaction, through the dialect's INSERT ... ON CONFLICT.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from punchgate.sync.sink import tables as t
from punchgate.sync.sink.items import DeviceState, Digests, Event, GatewayState


def parse_time(value: str | None) -> dt.datetime | None:
    """A payload's ISO 8601 time (`Z` for UTC) as an aware datetime; None stays None."""
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT (it has ON CONFLICT)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def upsert_device_state(conn: Connection, item: DeviceState, now: dt.datetime) -> None:
    values = {
        "gateway": item.gateway,
        "device": item.device,
        "state": item.data["state"],
        "as_of": parse_time(item.data.get("as_of")),
        "payload": item.data,
        "received_at": now,
    }
    statement = dialect_insert(conn, t.device_states)
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


def upsert_gateway_state(conn: Connection, item: GatewayState, now: dt.datetime) -> None:
    values = {"gateway": item.gateway, "state": item.data["state"], "payload": item.data, "received_at": now}
    statement = dialect_insert(conn, t.gateway_states)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["gateway"],
            set_={k: statement.excluded[k] for k in ("state", "payload", "received_at")},
        ),
        values,
    )


def insert_event(conn: Connection, item: Event, now: dt.datetime) -> None:
    data = item.data
    values = {
        "gateway": item.gateway,
        "device": data["device"],
        "event": data["event"],
        "code": data["code"],
        "severity": data["severity"],
        "detail": data["detail"],
        "time": parse_time(data["time"]),
        "received_at": now,
    }
    conn.execute(dialect_insert(conn, t.events).on_conflict_do_nothing(), values)


def replace_digests(conn: Connection, item: Digests, now: dt.datetime) -> None:
    data, d = item.data, t.digests.c
    gateway, device = item.gateway, data["device"]
    window = dialect_insert(conn, t.digest_windows)
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
            "as_of": parse_time(data["as_of"]),
            "received_at": now,
        },
    )
    days = {day["day"]: day for day in data["days"]}
    # Days the gateway no longer lists (out of its window, or none left) go.
    gone = sa.and_(d.gateway == gateway, d.device == device)
    conn.execute(t.digests.delete().where(gone, d.day.not_in(list(days)) if days else sa.true()))
    if not days:
        return
    statement = dialect_insert(conn, t.digests)
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
