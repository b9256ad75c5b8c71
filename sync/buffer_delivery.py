"""The store's delivery marks: punches in, delivered, sent and confirmed (central mode), replayed.

`buffer_outbox` holds the statements; this module holds the transactions around them under the
write lock and the counts that change with each commit (pending per device, unconfirmed, the
`buffer_full` limit, punches ever stored). Kept apart from `store.py` so the facade only
delegates.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from punchgate.sync import audit, buffer_chain, buffer_counts, buffer_identity, buffer_outbox
from punchgate.sync.buffer_outbox import Confirmed
from punchgate.sync.records import Punch

if TYPE_CHECKING:
    from punchgate.sync.store import Store

# The store's logger: these lines are the store's, wherever the code sits.
log = structlog.get_logger("punchgate.sync.store")


def add_new(store: Store, punches: Sequence[Punch]) -> list[str]:
    """`Store.add_punches` without the companion update: insert what is new and fits."""
    with store._write_lock:
        unique = list({p.id: p for p in punches}.values())
        known = store.known_ids(p.id for p in unique)
        new = [p for p in unique if p.id not in known]
        if not new:
            return []
        store._limits.check_disk(store.path.parent)
        room = store._limits.room_for(len(new))
        fits, refused = new[:room], new[room:]
        if fits:
            now = time.time()
            rows = [buffer_outbox.punch_row(p, now) for p in fits]
            with store._writer.begin() as conn:
                buffer_outbox.insert_rows(conn, rows)
                buffer_identity.count_stored(conn, len(fits))
                if store.audit_enabled:
                    audit.append_punches(conn, rows)
            buffer_counts.pending_changed(store, Counter(p.device for p in fits), 1)
            store._stored += len(fits)
        if refused:
            store._limits.refuse(len(refused), stored=[p.id for p in fits])
    return [p.id for p in fits]


def mark_delivered(store: Store, pks: Sequence[int]) -> int:
    """`Store.mark_delivered`: these rows delivered, in one transaction."""
    if not pks:
        return 0
    with store._write_lock:
        with store._writer.begin() as conn:
            changed = buffer_outbox.mark_delivered(conn, pks, time.time())
        buffer_counts.pending_changed(store, changed, -1)
        store._limits.update_full()
    store._companion.update(store._stored)  # catches the companion up after a burst of inserts
    return changed.total()


def mark_sent(store: Store, pks: Sequence[int]) -> int:
    """`Store.mark_sent`: the PUBACK of these rows in central mode."""
    if not pks:
        return 0
    with store._write_lock:
        with store._writer.begin() as conn:
            fresh = buffer_outbox.mark_sent(conn, pks, time.time())
        store._unconfirmed += fresh
    store._companion.update(store._stored)
    return fresh


def confirm(store: Store, *, ids: list[str] | None = None, pks: list[int] | None = None) -> Confirmed:
    """Deliver the pending rows a consumer confirmed (by id, or by pk)."""
    if not ids and not pks:
        return Confirmed(0, 0)
    with store._write_lock:
        with store._writer.begin() as conn:
            now = time.time()
            if ids:
                done = buffer_outbox.confirm_ids(conn, ids, now)
            else:
                done = buffer_outbox.confirm_pks(conn, pks or [], now)
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
