"""The store's delivery marks: punches in, delivered, sent and confirmed (central mode), replayed.

`buffer_outbox` holds the statements; this module holds the transactions around them under the
write lock and the counts that change with each commit (pending per device, unconfirmed, the
`buffer_full` limit, punches ever stored). Kept apart from `store.py` so the facade only
delegates.

`pending_per_device` is the drain's read: whole messages' worth of one terminal at a time, in
pk order per terminal, whatever way the terminals' rows interleave in the file. In central
delivery it reads the rows not sent yet (`unsent=True`, with their record ids); re-sends are
claimed apart (`Store.claim_resends`).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, cast

import structlog
from sqlalchemy import Connection

from punchgate.sync import audit, buffer_chain, buffer_counts, buffer_outbox, buffer_schema
from punchgate.sync.buffer_outbox import Confirmed

if TYPE_CHECKING:
    from punchgate.sync.store import Store

# The store's logger: these lines are the store's, wherever the code sits.
log = structlog.get_logger("punchgate.sync.store")

_T = buffer_schema.punches
_P = _T.c
# A delivery mark whose rows the caller counted per device already (see `mark_delivered`).
_MARK_SQL = f"UPDATE {_T.name} SET {_P.delivered_at.name} = ? WHERE {_P.delivered_at} IS NULL AND {_P.pk} IN "
# SQLite's bound-parameter limit is 32766 on current builds; stay below it.
_MARK_CHUNK = 30000
# Which terminal each of the next pending rows belongs to (no payload: this only finds who is next).
_PENDING_HEADS_SQL = (
    f"SELECT {_P.pk}, {_P.device} FROM {_T.name}"
    f" WHERE {_P.delivered_at} IS NULL AND {_P.pk} > ? ORDER BY {_P.pk} LIMIT ?"
)
# One terminal's next pending rows: the partial index on (device) WHERE pending carries the
# rowid, so this is a range search of that index (device = ? AND rowid >= ?), no sort.
_PENDING_OF_DEVICE_SQL = (
    f"SELECT {_P.pk}, {_P.source}, {_P.payload} FROM {_T.name}"
    f" WHERE {_P.delivered_at} IS NULL AND {_P.device} = ? AND {_P.pk} >= ? ORDER BY {_P.pk} LIMIT ?"
)
# Central delivery: the same reads of the rows not sent yet. The heads come from the partial
# index of unsent rows (its WHERE repeated word for word); a terminal's rows from the pending
# device index as above, `sent_at IS NULL` checked on each row (sent rows of that terminal are
# skipped, never sent again from here), with the record id that `remember_batch` needs.
_UNSENT_HEADS_SQL = (
    f"SELECT {_P.pk}, {_P.device} FROM {_T.name}"
    f" WHERE {_P.delivered_at} IS NULL AND {_P.sent_at} IS NULL AND {_P.pk} > ? ORDER BY {_P.pk} LIMIT ?"
)
_UNSENT_OF_DEVICE_SQL = (
    f"SELECT {_P.pk}, {_P.source}, {_P.payload}, {_P.id} FROM {_T.name}"
    f" WHERE {_P.delivered_at} IS NULL AND {_P.device} = ? AND {_P.pk} >= ? AND {_P.sent_at} IS NULL"
    f" ORDER BY {_P.pk} LIMIT ?"
)
# The PUBACK of rows in central mode (`buffer_outbox.mark_sent`'s statements, word for word).
_UNSENT_WHERE = f"{_P.delivered_at} IS NULL AND {_P.sent_at} IS NULL"
_UNCONFIRMED_WHERE = f"{_P.delivered_at} IS NULL AND {_P.sent_at} IS NOT NULL"
_SENT_NEW_SQL = f"UPDATE {_T.name} SET {_P.sent_at.name} = ? WHERE {_UNSENT_WHERE} AND {_P.pk} IN "
_SENT_AGAIN_SQL = f"UPDATE {_T.name} SET {_P.sent_at.name} = ? WHERE {_UNCONFIRMED_WHERE} AND {_P.pk} IN "
# A confirmation of rows found by pk, in one statement: which were sent (unconfirmed) and whose.
_CONFIRM_PKS_SQL = (
    f"UPDATE {_T.name} SET {_P.delivered_at.name} = ? WHERE {_P.delivered_at} IS NULL AND {_P.pk} IN "
)
_CONFIRM_RETURNING = f" RETURNING {_P.device.name}, {_P.sent_at.name} IS NOT NULL"
# Is any unconfirmed row due for a re-send? (On the unconfirmed partial index, its WHERE repeated.)
_ANY_DUE_SQL = f"SELECT 1 FROM {_T.name} WHERE {_UNCONFIRMED_WHERE} AND {_P.sent_at} <= ? LIMIT 1"


class DeviceRows(NamedTuple):
    """One terminal's next pending rows, oldest first, as columns (the drain's read); `ids`, the
    record ids, only in a read of unsent rows (central delivery)."""

    device: str
    pks: tuple[int, ...]
    sources: tuple[str, ...]
    payloads: tuple[str, ...]
    ids: tuple[str, ...] = ()


def pending_per_device(
    store: Store,
    limit: int,
    per_device: int,
    *,
    after: int,
    read_up_to: dict[str, int],
    unsent: bool = False,
) -> tuple[list[DeviceRows], int]:
    """About `limit` pending rows (at least one terminal's read), `per_device` at a time per
    terminal, terminals taken in the order of their oldest unread pending row. `unsent`
    (central delivery): only rows not sent yet, each with its record id; "pending" below then
    means pending and not sent.

    `after`: every pending row with a pk up to it has been read already (the caller's cursor).
    `read_up_to`: per terminal, the highest pk read already; updated here. Rows above `after`
    but at or below their terminal's `read_up_to` were read by an earlier terminal read and are
    skipped. Returns the terminal reads (each in pk order; a terminal may come twice, its
    older rows first) and the new `after`: the last pk up to which every pending row is now
    read. One read transaction, so one snapshot.
    """
    groups: list[DeviceRows] = []
    taken = 0
    heads_sql, device_sql = (
        (_UNSENT_HEADS_SQL, _UNSENT_OF_DEVICE_SQL) if unsent else (_PENDING_HEADS_SQL, _PENDING_OF_DEVICE_SQL)
    )
    with store._engine.connect() as conn, conn.begin():
        # The driver's cursor inside SQLAlchemy's transaction (BEGIN DEFERRED: one snapshot):
        # plain tuples, transposed in C, cost a fraction of SQLAlchemy rows and PendingRows.
        cursor = cast("sqlite3.Connection", conn.connection.dbapi_connection).cursor()
        try:
            while taken < limit:
                heads = cursor.execute(heads_sql, (after, limit)).fetchall()
                if not heads:
                    break
                for pk, device in heads:
                    if pk <= read_up_to.get(device, 0):
                        after = pk  # read already, by that terminal's own read
                        continue
                    if taken >= limit:
                        break  # this row's terminal waits for the next call; `after` stays below it
                    found = cursor.execute(device_sql, (device, pk, per_device)).fetchall()
                    if found:
                        groups.append(DeviceRows(device, *zip(*found, strict=True)))
                        taken += len(found)
                    read_up_to[device] = found[-1][0] if found else pk
                    after = pk
                else:
                    continue  # every head read: look further
                break
        finally:
            cursor.close()
    return groups, after


def any_resend_due(store: Store, older_than: float) -> bool:
    """Whether `Store.claim_resends(older_than=...)` would find a row, read without the write
    lock: the claim is a write transaction (BEGIN IMMEDIATE, an fsynced commit) that waits for
    whatever the writer is doing, and mostly finds nothing. A row that becomes due just after
    this read is found by the next scan."""
    with store._engine.connect() as conn, conn.begin():
        return conn.exec_driver_sql(_ANY_DUE_SQL, (time.time() - older_than,)).first() is not None


class _NotAllPending(Exception):
    """Fewer rows changed than the caller counted: some were not pending (roll back, recount)."""


def _mark_counted(conn: Connection, pks: Sequence[int], now: float) -> int:
    """Mark these rows delivered without RETURNING; how many changed."""
    changed = 0
    for start in range(0, len(pks), _MARK_CHUNK):
        part = list(pks[start : start + _MARK_CHUNK])
        changed += int(
            conn.exec_driver_sql(f"{_MARK_SQL}({','.join('?' * len(part))})", (now, *part)).rowcount
        )
    return changed


def mark_delivered(store: Store, pks: Sequence[int], devices: Counter[str] | None = None) -> int:
    """`Store.mark_delivered`: these rows delivered, in one transaction.

    `devices`: the same rows counted per device, when the caller knows them (the drain does).
    The UPDATE then needs no `RETURNING device` (about a quarter of its cost on a drain's
    marks); if fewer rows changed than were counted (some were not pending: delivered by a
    replay's earlier send, or a pk given twice), that transaction is rolled back and the rows
    marked again with RETURNING, so the pending counts stay exact.
    """
    if not pks:
        return 0
    with store._write_lock:
        changed: Counter[str] | None = None
        if devices is not None and devices.total() == len(pks):
            try:
                with store._writer.begin() as conn:
                    if _mark_counted(conn, pks, time.time()) != len(pks):
                        raise _NotAllPending
                changed = devices
            except _NotAllPending:
                changed = None
        if changed is None:
            with store._writer.begin() as conn:
                changed = buffer_outbox.mark_delivered(conn, pks, time.time())
        buffer_counts.pending_changed(store, changed, -1)
        store._limits.update_full()
    store._companion.update(store._stored)  # catches the companion up after a burst of inserts
    return changed.total()


def _mark_sent(conn: Connection, pks: Sequence[int], now: float) -> int:
    """`buffer_outbox.mark_sent` in chunks of _MARK_CHUNK pks, not 900: the same two statements
    (rows not sent yet become unconfirmed; rows sent before, only when there are some, get the
    new time), a fraction of the round trips."""
    fresh = 0
    for start in range(0, len(pks), _MARK_CHUNK):
        part = list(pks[start : start + _MARK_CHUNK])
        fresh += int(
            conn.exec_driver_sql(f"{_SENT_NEW_SQL}({','.join('?' * len(part))})", (now, *part)).rowcount
        )
    if fresh < len(pks):  # some were sent before (a re-send), or confirmed already
        for start in range(0, len(pks), _MARK_CHUNK):
            part = list(pks[start : start + _MARK_CHUNK])
            conn.exec_driver_sql(f"{_SENT_AGAIN_SQL}({','.join('?' * len(part))})", (now, *part))
    return fresh


def mark_sent(store: Store, pks: Sequence[int]) -> int:
    """`Store.mark_sent`: the PUBACK of these rows in central mode."""
    if not pks:
        return 0
    with store._write_lock:
        with store._writer.begin() as conn:
            fresh = _mark_sent(conn, pks, time.time())
        store._unconfirmed += fresh
    store._companion.update(store._stored)
    return fresh


def _confirm_pks(conn: Connection, pks: Sequence[int], now: float) -> Confirmed:
    """`buffer_outbox.confirm_pks` in one statement per chunk instead of one per state: each row
    changed says whether it was sent (unconfirmed). The same rows change either way: every
    pending one of these pks."""
    devices: Counter[str] = Counter()
    unconfirmed = 0
    for start in range(0, len(pks), _MARK_CHUNK):
        part = list(pks[start : start + _MARK_CHUNK])
        sql = f"{_CONFIRM_PKS_SQL}({','.join('?' * len(part))}){_CONFIRM_RETURNING}"
        rows = conn.exec_driver_sql(sql, (now, *part)).fetchall()
        devices.update(str(device) for device, _sent in rows)
        unconfirmed += sum(1 for _device, sent in rows if sent)
    total = devices.total()
    return Confirmed(unconfirmed, total - unconfirmed, devices)


def confirm(store: Store, *, ids: list[str] | None = None, pks: list[int] | None = None) -> Confirmed:
    """Deliver the pending rows a consumer confirmed (by id, or by pk)."""
    if not ids and not pks:
        return Confirmed(0, 0)
    with store._write_lock:
        with store._writer.begin() as conn:
            now = time.time()
            done = buffer_outbox.confirm_ids(conn, ids, now) if ids else _confirm_pks(conn, pks or [], now)
        store._unconfirmed -= done.unconfirmed
        buffer_counts.pending_changed(store, done.devices, -1)
        store._limits.update_full()
    return done


def requeue_delivered(store: Store, *, since: float, device: str | None = None) -> int:
    """`Store.requeue_delivered`: punches delivered since `since` back to pending, audited."""
    with store._write_lock:
        with store._writer.begin() as conn:
            requeued = buffer_outbox.requeue_delivered(conn, since=since, device=device)
            changed = requeued.total()
            head = audit.append(conn, "replay", {"since": since, "device": device, "requeued": changed})
        buffer_counts.pending_changed(store, requeued, 1)
    log.info("buffer_requeued", punches=changed, since=since, device=device)
    buffer_chain.audited(store, head)
    return changed
