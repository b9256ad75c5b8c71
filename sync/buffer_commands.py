"""The store's side of remote commands: accepting requests, storing answers, resending a range.

`command_store` holds the table; this module holds the transactions that write a request or an
answer together with its audit entry (one commit for a burst), and the `punches.resend` requeue
with its `replay` entry and pending count. Kept apart from `store.py` so the facade only
delegates.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from punchgate.sync import audit, buffer_chain, buffer_counts, command_store
from punchgate.sync.command_store import StoredRequest

if TYPE_CHECKING:
    from punchgate.sync.store import Store

# The store's logger: these lines are the store's, wherever the code sits.
log = structlog.get_logger("punchgate.sync.store")


def accept_many(
    store: Store, items: Sequence[tuple[command_store.NewRequest, dict[str, Any]]]
) -> list[StoredRequest | None]:
    """`Store.command_accept_many`: store new requests and their audit entries in one commit."""
    results: list[StoredRequest | None] = []
    entries: list[dict[str, Any]] = []
    with store._write_lock, store._writer.begin() as conn:
        for new, entry in items:
            existing = command_store.insert(conn, new)
            results.append(existing)
            if existing is None:
                entries.append(entry)
        head = audit.append_many(conn, "command_accepted", entries) if entries else None
    buffer_chain.audited(store, head)
    return results


def finish_many(store: Store, answers: Sequence[command_store.FinalAnswer]) -> list[bool]:
    """`Store.command_finish_many`: store final answers and their audit entries in one commit."""
    stored: list[bool] = []
    entries: list[dict[str, Any]] = []
    now = time.time()
    with store._write_lock, store._writer.begin() as conn:
        for a in answers:
            written, _done = command_store.finish(
                conn, a.request_id, a.target, a.status, a.response, now, masked_request=a.masked_request
            )
            stored.append(written)
            if written:
                entries.append(a.entry)
        head = audit.append_many(conn, "command_done", entries) if entries else None
    buffer_chain.audited(store, head)
    return stored


def requeue_range(
    store: Store,
    device: str,
    *,
    utc_from: dt.datetime,
    utc_to: dt.datetime,
    local_day: dt.date | None = None,
    note: dict[str, Any] | None = None,
) -> int:
    """`Store.requeue_range`: one terminal's delivered punches of a range back to pending."""
    utc_from, utc_to = utc_from.astimezone(dt.UTC), utc_to.astimezone(dt.UTC)
    day = None if local_day is None else local_day.isoformat()
    with store._write_lock:
        with store._writer.begin() as conn:
            changed = command_store.requeue_range(
                conn, device, utc_from=utc_from.isoformat(), utc_to=utc_to.isoformat(), local_day=day
            )
            head = audit.append(
                conn,
                "replay",
                {
                    "device": device,
                    "from": utc_from.isoformat(),
                    "to": utc_to.isoformat(),
                    "day": day,
                    "requeued": changed,
                    **(note or {}),
                },
            )
        buffer_counts.pending_changed(store, {device: changed}, 1)  # one terminal's rows
    log.info("buffer_requeued_range", punches=changed, device=device, day=day)
    buffer_chain.audited(store, head)
    return changed
