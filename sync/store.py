"""The durable buffer: every punch is committed (fsynced) here before anyone is told it exists.

`Store` is the one object the gateway, the forwarder and the benchmarks use. It composes:

* `buffer_file`: opening the file safely (WAL, `synchronous=FULL`, explicit transactions,
  migrations, the schema check), and refusing a damaged, missing or foreign one
  (`BufferRefusedError`; `buffer_inspect`, `buffer_identity`);
* `buffer_paths`: the file family (database, WAL, companion, lock), 0600 files in a 0700
  folder, and the lock the store holds from open to close;
* `buffer_identity`: the identity record (gateway, created, punches ever stored) and the
  companion file kept in step with it;
* `migrations`: the single definition of the schema (frozen SQL steps, `user_version`);
* `buffer_schema`: the table/column names the store uses, checked against the migrated file;
* `buffer_outbox`: the punches in and out (dedupe, insert, pending reads, delivery marks,
  replay, purge);
* `buffer_devices`: per-device batch sequence numbers and terminal metadata;
* `buffer_limits`: the pending count, `buffer_full` / `disk_low` refusals and their faults;
* `audit`: the hash chain every stored punch and administrative action is appended to, in the
  transaction that makes the change (docs/audit.md);
* `manual`: make-up punches, entered and decided under the same lock and transactions.
* `command_store`: remote commands accepted and their answers (idempotency, resuming after a
  restart), audited in the transaction that records them.

`Store`'s methods are thin delegations; the transactions behind them, with the counts that
change with each commit, sit in modules of their own, each taking the store:

* `buffer_insert`: punches in (dedupe, limits, insert, audit, counts; one commit per call);
* `buffer_delivery`: punches delivered, sent and confirmed (central mode), replayed;
* `buffer_counts`: the pending counts kept in memory, in total and per device;
* `buffer_seqs`: batch sequence numbers handed out from reserved blocks;
* `buffer_chain`: starting the audit chain, administrative entries, purges, listeners;
* `buffer_manual`: entering and deciding make-up punches;
* `buffer_commands`: accepting remote commands, storing answers, resending a range.

The API is synchronous and thread-safe; async callers wrap it in `asyncio.to_thread`. Writes
are serialised by one re-entrant lock (SQLite has a single writer anyway, and taking the lock
in-process avoids busy-waiting on file locks); the lock also guards the pending count and the
limit state, which change only together with the commit that justifies them. The batch
sequence numbers reserved in the file are handed out under a small lock of their own, so
the drain never waits for a delivery mark's commit. Reads need no lock: WAL readers see the
last commit.

Pending counts, in total and per device, are counted in the table once, at open, and from then
on kept in memory by exactly the rows each committed statement inserted or changed (the
statements that change delivery state return the devices of the rows they changed), so
`/metrics`, `/api/devices` and `punchgate status` never count the table. `recount_pending()`
counts it again and says whether the kept counts agreed.

Undelivered punches are never evicted: when the pending count reaches `max_pending` or free
disk drops below `min_free_disk_mb`, new punches are refused with `BufferFullError` /
`DiskLowError` and the workers stop reading terminals (which still hold their records).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from punchgate.sync import (
    audit,
    buffer_chain,
    buffer_clean_stop,
    buffer_commands,
    buffer_counts,
    buffer_delivery,
    buffer_devices,
    buffer_insert,
    buffer_manual,
    buffer_outbox,
    buffer_seqs,
    buffer_staging,
    command_store,
    manual,
)
from punchgate.sync.audit import Head
from punchgate.sync.buffer_errors import (
    BufferFullError,
    BufferLockedError,
    BufferRefusedError,
    DiskLowError,
    StoreError,
    StoreRefusedError,
)
from punchgate.sync.buffer_file import OpenedFile, open_file
from punchgate.sync.buffer_identity import Identity, write_companion
from punchgate.sync.buffer_limits import Limits
from punchgate.sync.buffer_manual import PunchBuilder
from punchgate.sync.buffer_outbox import Confirmed, PendingRow
from punchgate.sync.buffer_staging import Moved
from punchgate.sync.command_store import StoredRequest
from punchgate.sync.manual import ManualEntry, ManualSettings
from punchgate.sync.records import Punch
from punchgate.sync.settings import BufferSettings

__all__ = [
    "BufferFullError",
    "BufferLockedError",
    "BufferRefusedError",
    "Confirmed",
    "DiskLowError",
    "PendingRow",
    "Store",
    "StoreError",
    "StoreRefusedError",
]

log = structlog.get_logger(__name__)


class Store:
    """The punch buffer. Create with `Store.open(settings)`; call `close()` when done."""

    def __init__(self, opened: OpenedFile, settings: BufferSettings) -> None:
        """Wrap an opened, migrated file (`Store.open` does both)."""
        engine = opened.engine
        self._engine = engine
        self._writer = engine.execution_options(write=True)
        self._opened = opened
        self.settings = settings
        self.path = settings.path
        self._write_lock = threading.RLock()
        self._seq: dict[str, tuple[int, int]] = {}  # device -> (next seq, reserved until)
        self._seq_lock = threading.Lock()  # guards `_seq`; taken after the write lock, never before
        self._stored = opened.identity.stored  # punches ever stored, as last committed
        self._companion = opened.companion
        # Off only in the audit benchmark (bench/bench_audit.py), to measure what the chain costs.
        self.audit_enabled = True
        # Called (in the committing thread, outside the lock) after an administrative entry.
        self.on_audit_action: list[Callable[[Head], None]] = []
        # Undelivered punches per device (devices with none are dropped), counted in the file
        # here and kept from then on like the total; `_counts_lock` lets readers copy it whole.
        self._pending_by_device: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        with engine.connect() as conn:
            self._limits = Limits(settings, pending=0)
            self._set_pending_counts(buffer_outbox.pending_devices(conn))
            # Sent and not confirmed yet (central delivery); kept like the pending count.
            self._unconfirmed = buffer_outbox.count_unconfirmed(conn)
            # Committed before their dedupe (`buffer_staging`), per device; kept like the above.
            self._staged_by_device: Counter[str] = buffer_staging.count_staged(conn)
            self._limits.staged = sum(self._staged_by_device.values())

    # --- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: BufferSettings, *, gateway_id: str | None = None) -> Store:
        """Open (creating or migrating) the buffer file, and hold its lock until `close()`.

        `gateway_id` claims a file nobody claimed yet and refuses another gateway's file; the
        daemon always passes it (tools and tests may open a buffer without). Raises
        `BufferRefusedError` when the file must not be used (damaged, missing, not this
        gateway's, or in use by another process), `StoreError` when it cannot be.
        """
        opened = open_file(settings.path, gateway_id=gateway_id)
        path = str(settings.path)
        if opened.tightened:
            log.warning("buffer_permissions_tightened", path=path, files=opened.tightened, mode="0600")
        if opened.from_version != opened.to_version:
            log.info(
                "buffer_schema_migrated",
                path=path,
                from_version=opened.from_version,
                to_version=opened.to_version,
            )
        for finding in opened.warnings:
            log.warning(f"buffer_{finding.problem}", path=path, detail=finding.detail)
        try:
            store = cls(opened, settings)
            store._start_chain()
        except Exception as exc:
            opened.engine.dispose()
            opened.lock.release()
            raise StoreError(f"{settings.path}: cannot open the buffer: {exc}") from exc
        log.info(
            "buffer_opened",
            path=path,
            pending=store._limits.pending,
            created=opened.created,
            gateway=opened.identity.gateway_id,
            stored=opened.identity.stored,
            # Why quick_check ran, or "skipped": the last stop left the file as it is now.
            quick_check=opened.why_checked or ("new_file" if opened.created else "skipped"),
            last_checked=dt.datetime.fromtimestamp(opened.checked, dt.UTC).isoformat(timespec="seconds"),
        )
        return store

    def close(self) -> None:
        """Close the file, bring the companion up to date with how this stop left the file
        (`buffer_clean_stop`: the next start may then skip quick_check), release the lock."""
        self._engine.dispose()
        try:
            if self._opened.lock.held:
                self._companion.flush()
                self._record_clean_stop()
        finally:
            self._opened.lock.release()

    def _record_clean_stop(self) -> None:
        companion = self._companion
        try:
            buffer_clean_stop.record(
                companion.paths,
                lambda stop: write_companion(companion.paths, companion.written, stop),
                self._opened.checked,
            )
        except OSError as exc:  # the next start checks the file, as after a crash
            log.warning("buffer_clean_stop_not_recorded", path=str(companion.paths.companion), error=str(exc))

    @property
    def identity(self) -> Identity:
        """The file's identity as last committed (`stored` counts every punch ever inserted)."""
        identity = self._opened.identity
        return Identity(identity.gateway_id, identity.created, self._stored)

    # --- pending counts (kept in memory; see the module docstring) ---------------------------
    def _set_pending_counts(self, by_device: Mapping[str, int]) -> None:
        buffer_counts.set_pending_counts(self, by_device)

    def _pending_changed(self, changes: Mapping[str, int], sign: int) -> None:
        """Add (`sign` 1) or take away (-1) committed rows, per device. Under the write lock."""
        buffer_counts.pending_changed(self, changes, sign)

    def recount_pending(self) -> bool:
        """Count pending punches per device in the table and adopt those counts; True when the
        counts kept in memory agreed (a disagreement is logged: it would be a bug)."""
        return buffer_counts.recount_pending(self)

    # --- punches in -----------------------------------------------------------------------
    def known_ids(self, ids: Iterable[str]) -> set[str]:
        """The subset of `ids` already in the buffer (pending or delivered)."""
        with self._engine.connect() as conn:
            return buffer_outbox.known_ids(conn, ids)

    def add_punches(self, punches: Sequence[Punch]) -> list[str]:
        """Store new punches durably; returns the ids actually inserted (known ids are a no-op).

        Below the disk minimum nothing is stored (`DiskLowError`). Near `max_pending` the
        punches that fit are stored, in the order given (oldest first), and `BufferFullError`
        reports the rest refused, with `.stored` naming what did go in: the buffer fills up to
        its limit, and a terminal read larger than the limit still makes progress as it drains.
        """
        if not punches:
            return []
        try:
            return self._add_new(punches)
        finally:
            # Outside the write lock: a companion write (two fsyncs, at most once a second)
            # never holds up another writer. The count is a committed one: never ahead of the file.
            self._companion.update(self._stored)

    def _add_new(self, punches: Sequence[Punch]) -> list[str]:
        return buffer_insert.add_new(self, punches)

    # --- staged punches (`buffer_staging`) --------------------------------------------------
    def add_or_stage(self, punches: Sequence[Punch], *, stage: bool) -> list[str] | None:
        """`add_punches`, or commit them staged when `stage` is asked or a device of theirs
        still has staged punches (what a terminal uploads reaches `punches` in its order);
        None when staged. The same refusals as `add_punches`; staged, all or none."""
        if not punches:
            return []
        try:
            with self._write_lock:
                if not stage and not any(self._staged_by_device.get(d) for d in {p.device for p in punches}):
                    return self._add_new(punches)
                now = time.time()
                buffer_staging.stage(self, [buffer_outbox.punch_row(p, now) for p in punches])
                return None
        finally:
            self._companion.update(self._stored)  # outside the lock, as `add_punches` does

    def move_staged(self, limit: int) -> Moved:
        """Move the oldest staged punches (at most `limit`) into the outbox, in one transaction."""
        try:
            with self._write_lock:
                return buffer_staging.move(self, limit)
        finally:
            self._companion.update(self._stored)  # outside the lock, as `add_punches` does

    def staged_count(self, device: str | None = None) -> int:
        """Staged punches not moved yet (of one device); from memory, no query."""
        with self._counts_lock:
            if device is None:
                return self._limits.staged
            return self._staged_by_device.get(device, 0)

    def active_faults(self) -> frozenset[str]:
        """`buffer_full` / `disk_low` while the store refuses punches for that reason."""
        with self._write_lock:
            return self._limits.active_faults()

    # --- the outbox ---------------------------------------------------------------------------
    def pending_count(self, device: str | None = None) -> int:
        """Undelivered punches (of one device); from memory, no query."""
        if device is None:
            return self._limits.pending
        with self._counts_lock:
            return self._pending_by_device.get(device, 0)

    def pending_devices(self) -> dict[str, int]:
        """Undelivered punches per device (devices with some); from memory, no query."""
        return buffer_counts.pending_devices(self)

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest undelivered punch was stored; None when nothing is pending."""
        with self._engine.connect() as conn:
            stored_at = buffer_outbox.oldest_pending_stored_at(conn)
        return None if stored_at is None else max(0.0, time.time() - stored_at)

    def pending_batch(self, limit: int, *, after: int = 0) -> list[PendingRow]:
        """Up to `limit` undelivered punches with pk > `after`, oldest first (all devices)."""
        with self._engine.connect() as conn:
            return buffer_outbox.pending_batch(conn, limit, after=after)

    def mark_delivered(self, pks: Sequence[int]) -> int:
        """Mark exactly these rows delivered, in one transaction; returns how many changed."""
        return buffer_delivery.mark_delivered(self, pks)

    # --- central delivery (docs/mqtt-contract.md, "Confirmations") ---------------------------
    def unsent_batch(self, limit: int, *, after: int = 0) -> list[PendingRow]:
        """Up to `limit` undelivered punches not sent yet with pk > `after`, oldest first."""
        with self._engine.connect() as conn:
            return buffer_outbox.unsent_batch(conn, limit, after=after)

    def mark_sent(self, pks: Sequence[int]) -> int:
        """Note the PUBACK of these rows (central mode: they stay pending until confirmed);
        returns how many became "sent, unconfirmed"."""
        return buffer_delivery.mark_sent(self, pks)

    def claim_resends(self, *, older_than: float, limit: int) -> list[PendingRow]:
        """Unconfirmed punches last sent `older_than` seconds ago or earlier, oldest first; each
        is claimed for a new send (see `buffer_outbox.claim_resends`)."""
        now = time.time()
        with self._write_lock, self._writer.begin() as conn:
            return buffer_outbox.claim_resends(conn, sent_before=now - older_than, now=now, limit=limit)

    def confirm_ids(self, ids: Sequence[str]) -> Confirmed:
        """Deliver the pending punches with these ids: a consumer confirmed it stored them."""
        return self._confirm(ids=list(dict.fromkeys(ids)))

    def confirm_pks(self, pks: Sequence[int]) -> Confirmed:
        """Deliver the pending rows with these pks (a confirmed batch the forwarder remembers)."""
        return self._confirm(pks=list(dict.fromkeys(pks)))

    def _confirm(self, *, ids: list[str] | None = None, pks: list[int] | None = None) -> Confirmed:
        return buffer_delivery.confirm(self, ids=ids, pks=pks)

    def unconfirmed_count(self) -> int:
        """Punches sent and not confirmed yet (always 0 in broker mode)."""
        return self._unconfirmed

    def oldest_unconfirmed_age(self) -> float | None:
        """Seconds since the oldest sent, unconfirmed punch was stored; None when there is none."""
        with self._engine.connect() as conn:
            stored_at = buffer_outbox.oldest_unconfirmed_stored_at(conn)
        return None if stored_at is None else max(0.0, time.time() - stored_at)

    def oldest_unsent_age(self) -> float | None:
        """Seconds since the oldest undelivered punch not sent yet was stored; None when none."""
        with self._engine.connect() as conn:
            stored_at = buffer_outbox.oldest_unsent_stored_at(conn)
        return None if stored_at is None else max(0.0, time.time() - stored_at)

    # --- reconciliation digests (punchgate.sync.digests) ----------------------------------
    def days_ids(self, device: str, days: set[dt.date]) -> dict[dt.date, list[str]]:
        """Ids of one terminal's punches per terminal-local day of `days` (absent: no punch)."""
        if not days:
            return {}
        # Any UTC offset (-12:00 .. +14:00) keeps a local day within the UTC days around it.
        utc_from = (min(days) - dt.timedelta(days=1)).isoformat()
        utc_to = (max(days) + dt.timedelta(days=2)).isoformat()
        wanted = {day.isoformat(): day for day in days}
        with self._engine.connect() as conn:
            found = buffer_outbox.days_ids(conn, device, set(wanted), utc_from=utc_from, utc_to=utc_to)
        return {wanted[day]: ids for day, ids in found.items()}

    def days_stored_since(self, after_pk: int) -> tuple[dict[str, set[str]], int]:
        """Terminal -> local days of punches stored after `after_pk`, and the newest pk."""
        with self._engine.connect() as conn:
            return buffer_outbox.days_stored_since(conn, after_pk)

    def max_pk(self) -> int:
        with self._engine.connect() as conn:
            return buffer_outbox.max_pk(conn)

    def requeue_delivered(self, *, since: float, device: str | None = None) -> int:
        """Make punches delivered at or after `since` (unix time) pending again, to send them
        once more (replay after a broker lost what it had acknowledged). Ids make the
        repeats harmless at central. Returns how many rows went back to pending."""
        return buffer_delivery.requeue_delivered(self, since=since, device=device)

    def next_batch_seq(self, device: str) -> int:
        """The next per-device batch number: strictly increasing across restarts, gaps allowed."""
        return self.next_batch_seqs([device])[0]

    def next_batch_seqs(self, devices: Sequence[str]) -> list[int]:
        """`next_batch_seq` for each entry in order (one call per read window, not per batch).

        Numbers come from blocks reserved in the file (`buffer_devices`). Handing out reserved
        numbers takes only `_seq_lock`, never the write lock, so the drain does not wait for a
        delivery mark's commit. When a device has too few left, one commit reserves blocks for
        it and for every other device with pending punches and none reserved: a backlog of 200
        terminals costs one fsynced commit, not 200."""
        return buffer_seqs.next_batch_seqs(self, devices)

    def purge_delivered(self, older_than_days: float | None = None) -> int:
        """Delete punches delivered more than N days ago (default: the configured retention)."""
        return buffer_chain.purge_delivered(self, older_than_days)

    def punch_count(self) -> int:
        """All punches held, delivered or not."""
        with self._engine.connect() as conn:
            return buffer_outbox.punch_count(conn)

    def delivered_ids(self) -> set[str]:
        """Ids of every delivered punch still held (for reconciliation and tests)."""
        with self._engine.connect() as conn:
            return buffer_outbox.delivered_ids(conn)

    def all_ids(self) -> set[str]:
        with self._engine.connect() as conn:
            return buffer_outbox.all_ids(conn)

    # --- per-device memory ----------------------------------------------------------------
    def get_device_meta(self, device: str) -> dict[str, Any]:
        """What the gateway remembers about a terminal (last serial, last record count); {} if none."""
        with self._engine.connect() as conn:
            return buffer_devices.get_device_meta(conn, device)

    def all_device_meta(self) -> dict[str, dict[str, Any]]:
        """Every terminal's remembered meta by key, in one query (a fleet's start-up)."""
        with self._engine.connect() as conn:
            return buffer_devices.all_device_meta(conn)

    def device_metas_ending(self, suffix: str) -> dict[str, dict[str, Any]]:
        """The metas whose key ends with `suffix`, by key, in one query."""
        with self._engine.connect() as conn:
            return buffer_devices.device_metas_ending(conn, suffix)

    def set_device_meta(self, device: str, data: dict[str, Any]) -> None:
        """Replace what is remembered about a terminal (JSON-serialisable values only)."""
        self.set_device_metas({device: data})

    def set_device_metas(self, metas: Mapping[str, dict[str, Any]]) -> None:
        """`set_device_meta` for many terminals in one commit (a gateway's stop)."""
        if not metas:
            return
        with self._write_lock, self._writer.begin() as conn:
            buffer_devices.set_device_metas(conn, metas, time.time())

    # --- the audit chain ------------------------------------------------------------------------
    def _start_chain(self) -> None:
        """Start the chain of a file that has none (new, or upgraded from before the chain): a
        `chain_started` entry, then `punches` entries covering every punch it already holds."""
        buffer_chain.start_chain(self)

    def _audited(self, head: Head | None) -> None:
        buffer_chain.audited(self, head)

    def audit_action(self, kind: str, data: dict[str, Any]) -> Head:
        """Append an administrative action (replay, log clear, config at start-up, ...)."""
        return buffer_chain.audit_action(self, kind, data)

    def audit_head(self) -> Head | None:
        with self._engine.connect() as conn:
            return audit.head(conn)

    def last_audit_entry(self, kind: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            return audit.last_of_kind(conn, kind)

    # --- make-up punches ------------------------------------------------------------------------
    def add_manual(self, entry: ManualEntry, settings: ManualSettings, punch: PunchBuilder) -> ManualEntry:
        """Record a make-up punch entered (checked against what the buffer holds, in the same
        transaction). Without `approval_required` it is approved at once and its punch stored.
        Raises ManualRefused saying which rule it breaks."""
        return buffer_manual.add_manual(self, entry, settings, punch)

    def decide_manual(
        self,
        entry_id: str,
        *,
        approve: bool,
        by: str,
        note: str | None,
        settings: ManualSettings,
        punch: PunchBuilder,
    ) -> ManualEntry:
        """Approve (its punch is stored and will be sent) or reject a pending make-up punch, by
        someone other than who entered it. Raises ManualRefused saying why not."""
        return buffer_manual.decide_manual(
            self, entry_id, approve=approve, by=by, note=note, settings=settings, punch=punch
        )

    def get_manual(self, entry_id: str) -> ManualEntry | None:
        with self._engine.connect() as conn:
            return manual.get_entry(conn, entry_id)

    def list_manual(
        self,
        *,
        status: manual.Status | None = None,
        device: str | None = None,
        user_id: str | None = None,
        limit: int = 1000,
    ) -> list[ManualEntry]:
        with self._engine.connect() as conn:
            return manual.list_entries(conn, status=status, device=device, user_id=user_id, limit=limit)

    # --- remote commands (punchgate.sync.command_store; gateway/commands) ----------------------------
    def command_accept(self, new: command_store.NewRequest, entry: dict[str, Any]) -> StoredRequest | None:
        """Store a new request and append `command_accepted` to the audit chain, in one
        transaction; the stored request instead (nothing written) when its id is known."""
        return self.command_accept_many([(new, entry)])[0]

    def command_accept_many(
        self, items: Sequence[tuple[command_store.NewRequest, dict[str, Any]]]
    ) -> list[StoredRequest | None]:
        """`command_accept` for several requests in one transaction (one commit for a burst)."""
        return buffer_commands.accept_many(self, items)

    def command_get(self, request_id: str) -> StoredRequest | None:
        with self._engine.connect() as conn:
            return command_store.get(conn, request_id)

    def command_status(self, request_id: str, target: str, status: str) -> None:
        """A target starts running, or waits again (a terminal lost in the middle)."""
        with self._write_lock, self._writer.begin() as conn:
            command_store.set_status(conn, request_id, target, status, time.time())

    def command_finish(
        self,
        request_id: str,
        target: str,
        status: str,
        response: str,
        entry: dict[str, Any],
        *,
        masked_request: dict[str, Any],
    ) -> bool:
        """Store a target's final answer with its `command_done` audit entry, in one transaction.
        False (nothing written) when the target had its final answer already."""
        answer = command_store.FinalAnswer(request_id, target, status, response, entry, masked_request)
        return self.command_finish_many([answer])[0]

    def command_finish_many(self, answers: Sequence[command_store.FinalAnswer]) -> list[bool]:
        """`command_finish` for several answers in one transaction (one commit for a burst)."""
        return buffer_commands.finish_many(self, answers)

    def command_published(self, keys: Sequence[tuple[str, str]]) -> None:
        if keys:
            with self._write_lock, self._writer.begin() as conn:
                command_store.mark_published(conn, keys)

    def command_open(self) -> list[StoredRequest]:
        """Requests to resume at start-up (see `command_store.open_requests`)."""
        with self._engine.connect() as conn:
            return command_store.open_requests(conn)

    def command_purge(self, older_than_days: float) -> int:
        with self._write_lock, self._writer.begin() as conn:
            return command_store.purge_done(conn, time.time() - older_than_days * 86400)

    def requeue_range(
        self,
        device: str,
        *,
        utc_from: dt.datetime,
        utc_to: dt.datetime,
        local_day: dt.date | None = None,
        note: dict[str, Any] | None = None,
    ) -> int:
        """Send one terminal's delivered punches of a time range (or of one terminal-local day
        inside it) again: the remote `punches.resend`. Audited as a `replay` in the same
        transaction; returns how many went back to pending."""
        return buffer_commands.requeue_range(
            self, device, utc_from=utc_from, utc_to=utc_to, local_day=local_day, note=note
        )
