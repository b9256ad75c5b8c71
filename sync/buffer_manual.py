"""The store's side of make-up punches: entering and deciding them under the write lock.

`manual` holds the rules and the table; this module holds the transactions that check an
entry, store the punch an approval makes and append their audit entries together, and the
pending count that follows the commit. Kept apart from `store.py` so the facade only delegates.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from punchgate.sync import audit, buffer_chain, buffer_counts, buffer_identity, buffer_outbox, manual
from punchgate.sync.audit import Head
from punchgate.sync.manual import ManualEntry, ManualRefused, ManualSettings
from punchgate.sync.records import Punch

if TYPE_CHECKING:
    from punchgate.sync.store import Store

# Builds the punch an approved make-up entry becomes: (entry, approved_by, approved_at) -> Punch.
PunchBuilder = Callable[[ManualEntry, str | None, dt.datetime], Punch]


def add_manual(
    store: Store, entry: ManualEntry, settings: ManualSettings, punch: PunchBuilder
) -> ManualEntry:
    """`Store.add_manual`: record a make-up punch entered, approving it at once when no
    approval is required."""
    with store._write_lock:
        with store._writer.begin() as conn:
            manual.check_new(conn, entry, settings)
            manual.insert_entry(conn, entry)
            head = audit.append(conn, "manual_entered", {"entry": entry.entered()})
            if not settings.approval_required:
                entry, head = _approve(conn, entry, None, None, punch)
        _after_manual(store, entry)
    buffer_chain.audited(store, head)
    return entry


def decide_manual(
    store: Store,
    entry_id: str,
    *,
    approve: bool,
    by: str,
    note: str | None,
    settings: ManualSettings,
    punch: PunchBuilder,
) -> ManualEntry:
    """`Store.decide_manual`: approve or reject a pending make-up punch."""
    with store._write_lock:
        with store._writer.begin() as conn:
            entry = manual.check_decision(manual.get_entry(conn, entry_id), entry_id, by)
            if approve:
                problem = manual.conflict(conn, entry, settings.conflict_minutes)
                if problem:
                    raise ManualRefused(f"cannot approve {entry_id}: {problem}")
                entry, head = _approve(conn, entry, by, note, punch)
            else:
                entry = manual.with_decision(entry, "rejected", by, buffer_identity.now_text(), note, None)
                manual.decide(conn, entry)
                head = audit.append(conn, "manual_rejected", entry.decided())
        _after_manual(store, entry)
    buffer_chain.audited(store, head)
    return entry


def _approve(
    conn: Any, entry: ManualEntry, by: str | None, note: str | None, build: PunchBuilder
) -> tuple[ManualEntry, Head]:
    at = dt.datetime.now(dt.UTC)
    made = build(entry, by, at)
    if buffer_outbox.known_ids(conn, [made.id]):
        raise ManualRefused(f"record {made.id} is in the buffer already")
    decided = manual.with_decision(
        entry, "approved", by, at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", note, made.id
    )
    manual.decide(conn, decided)
    now = time.time()
    rows = [buffer_outbox.punch_row(made, now)]
    buffer_outbox.insert_rows(conn, rows)
    buffer_identity.count_stored(conn, 1)
    audit.append_punches(conn, rows)
    return decided, audit.append(conn, "manual_approved", decided.decided())


def _after_manual(store: Store, entry: ManualEntry) -> None:
    """After the commit: a stored make-up punch counts as pending like any other."""
    if entry.status == "approved":
        buffer_counts.pending_changed(store, {entry.device: 1}, 1)
        store._stored += 1
