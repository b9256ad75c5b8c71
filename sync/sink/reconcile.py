"""Reconciliation: the gateways' per-day digests compared with the punches the sink stored.

A day matches when the sink holds as many punches as the gateway counted and their ids give the
same digest; otherwise it is `missing`, `extra` or `differs`. `recheck` stores each day's
outcome in the digests table; `counts` gives the rows per table for the check report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection

from punchgate.sync.contract import day_digest
from punchgate.sync.sink import tables as t


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


def reopen_changed_counts(conn: Connection) -> int:
    """Days known to match whose punch count at central is no longer the gateway's go back to
    `unchecked` (rows lost while nobody looked: a restored backup). One statement over the
    (gateway, device, local_day) index, not a comparison of every day's ids. How many."""
    d, p = t.digests.c, t.punches.c
    held = (
        sa.select(sa.func.count())
        .select_from(t.punches)
        .where(p.gateway == d.gateway, p.device == d.device, p.local_day == d.day)
        .scalar_subquery()
    )
    result = conn.execute(
        t.digests.update().where(d.status == "match", d.count != held).values(status="unchecked")
    )
    return int(result.rowcount or 0)


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


def gap_days(conn: Connection, *, older_than: dt.datetime) -> list[DayCheck]:
    """Digest days where central lacks ids the gateway holds (`missing`, `differs`) at their
    last check, whose digest arrived before `older_than` (younger gaps are still being delivered)."""
    d = t.digests.c
    query = sa.select(d.gateway, d.device, d.day, d.count, d.central_count, d.status).where(
        d.status.in_(("missing", "differs")), d.received_at < older_than
    )
    return [
        DayCheck(gateway, device, day, count, central or 0, status)
        for gateway, device, day, count, central, status in conn.execute(query).all()
    ]


def counts(conn: Connection) -> dict[str, int]:
    """Rows per table (the check report and tests)."""
    return {
        table.name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        for table in (t.punches, t.events, t.device_states, t.gateway_states, t.digests, t.dead_letters)
    }
