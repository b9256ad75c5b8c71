"""The buffer's memory of remote commands: requests accepted, and each target's answer.

Tables `command_requests` and `command_targets` (migration v6). What the gateway's command
service (`punchgate.gateway.commands`) relies on:

* a request id is inserted once (`insert`); a request whose id is already there is not
  inserted again and its stored state is returned instead, so a repeat is answered from here
  and never run twice, also across restarts;
* a target's final answer (`ok`, `error`, `expired`) is stored before it is published, and
  `published` is set once the broker acknowledged it: after a crash, `unpublished` lists what
  still has to go out, and `open_requests` what still has to run;
* once every target of a request is final the request is done (`done_at`), and its request
  text is replaced by the masked copy the caller gives (no password stays in the file);
* done requests are forgotten after the retention the caller chooses (`purge_done`).

Functions take the caller's SQLAlchemy connection inside its write transaction; the store
(`punchgate.sync.store`) owns transactions, the write lock and the audit entries made with them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from punchgate.sync import buffer_schema

_R = buffer_schema.command_requests
_RC = _R.c
_T = buffer_schema.command_targets
_TC = _T.c
FINAL = ("ok", "error", "expired")
_FINAL_SQL = "('ok', 'error', 'expired')"

_REQUEST_COLUMNS = (
    f"{_RC.id}, {_RC.command}, {_RC.requester}, {_RC.request}, {_RC.reply_topic}, {_RC.correlation}, "
    f"{_RC.received_at}, {_RC.expires_at}, {_RC.done_at}"
)
_TARGET_COLUMNS = f"{_TC.id}, {_TC.target}, {_TC.status}, {_TC.response}, {_TC.published}"
_INSERT_COLUMNS = ", ".join(c.name for c in _R.columns if c.name != "done_at")


@dataclass(frozen=True, slots=True)
class StoredTarget:
    target: str  # terminal name; "" for a gateway-wide command
    status: str  # waiting, running, ok, error, expired
    response: str | None  # the final answer (JSON) once final
    published: bool

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True, slots=True)
class StoredRequest:
    id: str
    command: str
    requester: str
    request: dict[str, Any]
    reply_topic: str
    correlation: bytes | None
    received_at: float
    expires_at: float
    done_at: float | None
    targets: dict[str, StoredTarget] = field(default_factory=dict)


def _request(row: Sequence[Any]) -> StoredRequest:
    ident, command, requester, request, topic, correlation, received, expires, done = row
    return StoredRequest(
        id=str(ident),
        command=str(command),
        requester=str(requester),
        request=json.loads(request),
        reply_topic=str(topic),
        correlation=None if correlation is None else bytes(correlation),
        received_at=float(received),
        expires_at=float(expires),
        done_at=None if done is None else float(done),
    )


def _targets(conn: Connection, ids: Sequence[str]) -> dict[str, dict[str, StoredTarget]]:
    found: dict[str, dict[str, StoredTarget]] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT {_TARGET_COLUMNS} FROM {_T.name} WHERE {_TC.id} IN ({marks})"
        for ident, target, status, response, published in conn.exec_driver_sql(sql, tuple(chunk)):
            found.setdefault(str(ident), {})[str(target)] = StoredTarget(
                str(target), str(status), None if response is None else str(response), bool(published)
            )
    return found


def _with_targets(conn: Connection, requests: list[StoredRequest]) -> list[StoredRequest]:
    targets = _targets(conn, [r.id for r in requests])
    return [dataclasses.replace(r, targets=targets.get(r.id, {})) for r in requests]


def get(conn: Connection, request_id: str) -> StoredRequest | None:
    """The stored request with this id and its targets; None when the id is new."""
    row = conn.exec_driver_sql(
        f"SELECT {_REQUEST_COLUMNS} FROM {_R.name} WHERE {_RC.id} = ?", (request_id,)
    ).fetchone()
    return None if row is None else _with_targets(conn, [_request(row)])[0]


@dataclass(frozen=True, slots=True)
class NewRequest:
    id: str
    command: str
    requester: str
    request: dict[str, Any]
    reply_topic: str
    correlation: bytes | None
    received_at: float
    expires_at: float
    targets: tuple[str, ...]


def insert(conn: Connection, new: NewRequest) -> StoredRequest | None:
    """Store a new request with its targets (all waiting); the stored one when the id is known."""
    existing = get(conn, new.id)
    if existing is not None:
        return existing
    conn.exec_driver_sql(
        f"INSERT INTO {_R.name} ({_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            new.command,
            new.requester,
            json.dumps(new.request, sort_keys=True, separators=(",", ":")),
            new.reply_topic,
            new.correlation,
            new.received_at,
            new.expires_at,
        ),
    )
    conn.exec_driver_sql(
        f"INSERT INTO {_T.name} ({_TC.id.name}, {_TC.target.name}, {_TC.status.name}, {_TC.updated_at.name})"
        " VALUES (?, ?, 'waiting', ?)",
        [(new.id, target, new.received_at) for target in new.targets],
    )
    return None


def set_status(conn: Connection, request_id: str, target: str, status: str, now: float) -> None:
    """A target goes back to waiting, or starts running (never touches a final target)."""
    conn.exec_driver_sql(
        f"UPDATE {_T.name} SET {_TC.status.name} = ?, {_TC.updated_at.name} = ?"
        f" WHERE {_TC.id} = ? AND {_TC.target} = ? AND {_TC.status} NOT IN {_FINAL_SQL}",
        (status, now, request_id, target),
    )


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """A target's final answer to store, with its audit entry and the request to keep once done."""

    request_id: str
    target: str
    status: str
    response: str  # the answer's JSON
    entry: dict[str, Any]  # the `command_done` audit entry
    masked_request: dict[str, Any]


def finish(
    conn: Connection,
    request_id: str,
    target: str,
    status: str,
    response: str,
    now: float,
    *,
    masked_request: dict[str, Any],
) -> tuple[bool, bool]:
    """Store a target's final answer. Returns (stored, done): `stored` is False when the target
    was final already (its first answer stands); `done` when the request has no open target left."""
    if status not in FINAL:
        raise ValueError(f"{status!r} is not a final status")
    changed = conn.exec_driver_sql(
        f"UPDATE {_T.name} SET {_TC.status.name} = ?, {_TC.response.name} = ?, {_TC.updated_at.name} = ?"
        f" WHERE {_TC.id} = ? AND {_TC.target} = ? AND {_TC.status} NOT IN {_FINAL_SQL}",
        (status, response, now, request_id, target),
    ).rowcount
    open_left = conn.exec_driver_sql(
        f"SELECT count(*) FROM {_T.name} WHERE {_TC.id} = ? AND {_TC.status} NOT IN {_FINAL_SQL}",
        (request_id,),
    ).scalar_one()
    done = int(open_left) == 0
    if changed and done:
        conn.exec_driver_sql(
            f"UPDATE {_R.name} SET {_RC.done_at.name} = ?, {_RC.request.name} = ? WHERE {_RC.id} = ?",
            (now, json.dumps(masked_request, sort_keys=True, separators=(",", ":")), request_id),
        )
    return bool(changed), done


def mark_published(conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
    """The broker acknowledged these (request id, target) final answers."""
    conn.exec_driver_sql(
        f"UPDATE {_T.name} SET {_TC.published.name} = 1 WHERE {_TC.id} = ? AND {_TC.target} = ?",
        list(keys),
    )


def open_requests(conn: Connection) -> list[StoredRequest]:
    """Requests with a target not final yet, or a final answer not acknowledged by the broker."""
    sql = (
        f"SELECT {_REQUEST_COLUMNS} FROM {_R.name} WHERE {_RC.done_at} IS NULL"
        f" OR {_RC.id} IN (SELECT {_TC.id} FROM {_T.name}"
        f" WHERE {_TC.published} = 0 AND {_TC.response} IS NOT NULL)"
        f" ORDER BY {_RC.received_at}"
    )
    return _with_targets(conn, [_request(row) for row in conn.exec_driver_sql(sql)])


def purge_done(conn: Connection, before: float) -> int:
    """Forget requests done before `before` (unix time): a repeat of their id runs again."""
    ids = [
        str(i)
        for (i,) in conn.exec_driver_sql(
            f"SELECT {_RC.id} FROM {_R.name} WHERE {_RC.done_at} IS NOT NULL AND {_RC.done_at} < ?", (before,)
        )
    ]
    for start in range(0, len(ids), 500):
        chunk = tuple(ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        conn.exec_driver_sql(f"DELETE FROM {_T.name} WHERE {_TC.id} IN ({marks})", chunk)
        conn.exec_driver_sql(f"DELETE FROM {_R.name} WHERE {_RC.id} IN ({marks})", chunk)
    return len(ids)


# --- punches.resend -------------------------------------------------------------------------------
_P = buffer_schema.punches
_PC = _P.c
_LOCAL_DAY = f"substr(json_extract({_PC.payload}, '$.local_time'), 1, 10)"


def requeue_range(
    conn: Connection, device: str, *, utc_from: str, utc_to: str, local_day: str | None = None
) -> int:
    """Make one terminal's delivered punches with `utc_from` <= utc_time < `utc_to` (ISO 8601 as
    the buffer writes it) pending again, only those of terminal-local `local_day` when given.
    Pending punches are left as they are (they go out anyway). Returns how many changed."""
    day = f" AND {_LOCAL_DAY} = ?" if local_day is not None else ""
    params: tuple[Any, ...] = (device, utc_from, utc_to) + ((local_day,) if local_day is not None else ())
    sql = (
        f"UPDATE {_P.name} SET {_PC.delivered_at.name} = NULL, {_PC.sent_at.name} = NULL"
        f" WHERE {_PC.device} = ? AND {_PC.utc_time} >= ? AND {_PC.utc_time} < ?"
        f" AND {_PC.delivered_at} IS NOT NULL{day}"
    )
    return int(conn.exec_driver_sql(sql, params).rowcount)
