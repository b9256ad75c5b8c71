"""The store's side of the audit chain: starting it, administrative entries, purges, listeners.

`audit` holds the chain itself; this module holds what the store does around it (the write
lock, the transaction, telling `on_audit_action` listeners after the commit). Kept apart from
`store.py` so the facade only delegates.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from punchgate.sync import audit, audit_prune, buffer_outbox
from punchgate.sync.audit import Head

if TYPE_CHECKING:
    from punchgate.sync.store import Store

# The store's logger: these lines are the store's, wherever the code sits.
log = structlog.get_logger("punchgate.sync.store")


def start_chain(store: Store) -> None:
    """Start the chain of a file that has none (new, or upgraded from before the chain): a
    `chain_started` entry, then `punches` entries covering every punch it already holds."""
    with store._write_lock, store._writer.begin() as conn:
        if audit.head(conn) is not None or conn.exec_driver_sql(audit._ANCHOR_SQL).fetchone():
            return
        held = buffer_outbox.punch_count(conn)
        audit.append(conn, "chain_started", {"punches_held": held})
        columns = ", ".join(c.name for c in buffer_outbox.INSERT_COLUMNS)
        result = conn.exec_driver_sql(f"SELECT {columns} FROM punches ORDER BY pk")
        while rows := result.fetchmany(audit.PUNCHES_PER_ENTRY * 10):
            audit.append_punches(conn, [tuple(row) for row in rows])
    if held:
        log.info("audit_chain_started", punches_covered=held)


def audited(store: Store, head: Head | None) -> None:
    if head is None:
        return
    for listener in store.on_audit_action:
        try:
            listener(head)
        except Exception:
            log.exception("audit_listener_failed")


def audit_action(store: Store, kind: str, data: dict[str, Any]) -> Head:
    """Append an administrative action (replay, log clear, config at start-up, ...)."""
    with store._write_lock, store._writer.begin() as conn:
        head = audit.append(conn, kind, data)
    audited(store, head)
    return head


def purge_delivered(store: Store, older_than_days: float | None = None, *, now: float | None = None) -> int:
    """Delete punches delivered more than N days ago (default: the configured retention), and
    prune the audit entries older than that through a checkpoint (`audit_prune`). `now`: the
    unix time the age counts from (tests pin it to put the cut between two entries)."""
    days = store.settings.retention_days if older_than_days is None else older_than_days
    cutoff = (time.time() if now is None else now) - days * 86400
    head = None
    with store._write_lock, store._writer.begin() as conn:
        ids = buffer_outbox.purge_ids(conn, before=cutoff)
        deleted = 0
        if ids:
            deleted = buffer_outbox.purge_delivered(conn, before=cutoff)
            # Signed off in the chain, in the same transaction: a purge is not a gap.
            head = audit.append_purge(conn, ids, before=cutoff)
        try:
            by = {"job": "retention", "retention_days": days, "gateway": store.identity.gateway_id}
            pruned = audit_prune.prune(conn, before=cutoff, by=by)
        except audit_prune.PruneRefused as exc:
            # The punches still go (they were signed off); the entries stay for verify to name.
            log.error("audit_prune_refused", reason=str(exc))
            pruned = None
    if deleted:
        log.info("buffer_purged", deleted=deleted, retention_days=days)
    if pruned is not None:
        head = pruned.head
        log.info("audit_pruned", through=pruned.through, entries=pruned.entries, carried=pruned.carried)
    audited(store, head)
    return deleted
