"""Central delivery, the gateway's side (docs/mqtt-contract.md, "Confirmations").

With `mqtt.delivery = "central"` a punch is delivered when a central consumer says it has stored
it, not when the broker acknowledged the message: a broker that crashes between its PUBACK and
handing the message on (or without persistence) can then lose nothing. The forwarder owns the
connection and calls in here:

* `next_reads` replaces the drain's read: rows never sent, whole messages' worth per terminal,
  oldest first per terminal (`buffer_delivery.pending_per_device(unsent=True)`, as broker mode
  reads its pending rows), and, every few seconds, the unconfirmed rows whose last send is
  `mqtt.resend_after` old (claimed in the buffer, so a crash or a lost send only delays them by
  one more timeout; `next_rows` is the same with the unsent rows in pk order);
* after a PUBACK the forwarder hands the rows to `acked`: they are marked *sent*
  (`Store.mark_sent`) instead of delivered, by the worker thread below, once they have waited
  `SENT_MARK_GRACE` for their confirmation (up to `SENT_MARK_MAX_HOLD` while confirmations keep
  coming, and never while confirmations are queued: a consumer lagging behind a backlog must not
  have every row written twice); rows confirmed meanwhile are not written twice
  (what is remembered between a send and its confirmation: sync/confirmations_memory.py, and
  the sent rows' ids, kept a batch at a time until a confirmation needs them by id:
  sync/confirmations_sent.py);
* `submit` queues a message from `{base}/confirm`; one thread parses what has queued and takes
  its ids out of what the drain remembered (sync/confirmations_parse.py), another delivers what
  was taken meanwhile, together, in one buffer transaction, while the next messages are parsed
  (`handle_many` does both at once). Ids of rows this process sent are confirmed by their pk
  (the drain tells `remember_batch` which ids a batch carried), the others by id.

Invariants, each of which keeps it correct across gateway restarts, re-sends in new batches,
reordering and repeated confirmations:

* Record ids are the truth. A confirmed id delivers the pending row with that id, whatever
  batch, send or gateway run carried it, and whether or not its PUBACK was noted yet. An id the
  buffer does not hold (purged, another gateway's, garbage) is ignored and counted; an id
  already delivered is a harmless repeat, counted too.
* A batch confirmation (device, seq, count) is a shorthand: it delivers the rows of a batch
  this process published and still remembers, when `count` matches what it carried. A batch it
  does not know (sent before a restart, forgotten, never sent) is ignored and counted: its rows
  stay unconfirmed and are sent again, and the consumer confirms them again, by id.
* Nothing here can end the broker session: a malformed confirmation is logged with its payload
  and counted; a buffer error is logged, and the rows simply stay unconfirmed.
* Holding a PUBACK back from the buffer for `SENT_MARK_GRACE` changes no guarantee: a row is
  delivered only by a confirmation, as before. While held it is pending and not yet "sent" in
  the buffer, so the re-send clock starts that much later; a forwarder that stops marks what it
  holds sent first (`flush_sent`), and a gateway killed meanwhile sends those rows again at its
  next start instead of one timeout later (a duplicate, never a gap).
  What it saves: with a consumer that confirms within the grace, which is the normal case, a
  row is written once (confirmed) instead of twice (sent, then confirmed), each write moving it
  between the buffer's partial indexes under the single writer.
* Re-sends back off while nobody confirms anything: each round that re-sent rows without any
  confirmation arriving since the previous one doubles the wait (up to `_MAX_BACKOFF` times
  `resend_after`), so a central system that is down does not get the whole backlog again
  every timeout. Any confirmation resets it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from punchgate.sync import buffer_delivery
from punchgate.sync.buffer_delivery import DeviceRows
from punchgate.sync.confirmations_memory import HeldAcks, RememberedBatches, record_id_of
from punchgate.sync.confirmations_parse import Taken, merged, parse_confirmation, shown, take
from punchgate.sync.confirmations_sent import SentIds
from punchgate.sync.confirmations_state import StateThrottle
from punchgate.sync.settings import MqttSettings
from punchgate.sync.store import PendingRow, Store

log = structlog.get_logger(__name__)

# Rows of the batches remembered for batch confirmations (oldest batches forgotten first).
BATCH_MEMORY_ROWS = 200_000
# How often the drain looks for rows due to be sent again (at most; see `_scan_every`).
RESEND_SCAN_SECONDS = 5.0
_MAX_BACKOFF = 8


@dataclass
class ConfirmationStats:
    """Counters for /metrics and the status (monotonic except `last_*` and `backoff`)."""

    messages: int = 0  # confirmation messages read (malformed ones included)
    confirmed: int = 0  # punches delivered by a confirmation
    confirmed_batches: int = 0  # batch entries that delivered their rows
    repeated: int = 0  # ids confirmed again after they were delivered (harmless)
    unknown_ids: int = 0  # ids the buffer does not hold: ignored
    unknown_batches: int = 0  # batches this process does not remember (or a count mismatch): ignored
    malformed: int = 0  # messages that are not a valid confirmation: ignored, logged
    errors: int = 0  # confirmations the buffer failed to record (the rows stay unconfirmed)
    resent: int = 0  # punches sent again after `resend_after` without a confirmation
    last_confirmation_at: float | None = None
    backoff: int = 1  # the current re-send wait, in multiples of `resend_after`


class CentralDelivery:
    """The central delivery mode's state: re-send timing, remembered batches and the counters."""

    def __init__(self, mqtt: MqttSettings, store: Store, *, batch_memory: int = BATCH_MEMORY_ROWS) -> None:
        self.mqtt = mqtt
        self.store = store
        self.stats = ConfirmationStats()
        self._batches = RememberedBatches(batch_memory)
        self._sent_ids = SentIds(batch_memory)
        self._held = HeldAcks()  # under self._lock
        self._scan_every = min(RESEND_SCAN_SECONDS, mqtt.resend_after / 4)
        self._next_scan = time.monotonic() + self._scan_every
        self._confirmed_since_resend = True
        self._state = StateThrottle()
        self._lock = threading.Lock()
        self._queue: list[bytes] = []  # confirmations received, for the parser
        self._queued = threading.Event()
        self._parsing = False
        self._parser: threading.Thread | None = None
        self._taken: list[Taken] = []  # parsed and taken, for the writer
        self._writing = False
        self._ready = threading.Event()  # the writer's: something taken, or a PUBACK held
        self._worker: threading.Thread | None = None

    # --- the drain (called in a worker thread) --------------------------------------------------
    def next_rows(self, limit: int, after: int) -> list[PendingRow]:
        """Rows due again (every few seconds), else rows not sent yet with pk > `after`, in pk
        order. Re-sent rows come first and may lie behind the drain's cursor."""
        return self._claim_due(limit) or self.store.unsent_batch(limit, after=after)

    def next_reads(
        self, limit: int, per_device: int, *, after: int, read_up_to: dict[str, int]
    ) -> tuple[list[PendingRow], list[DeviceRows], int]:
        """What the drain sends next: (rows due again, [], `after`) every few seconds while some
        are due, else ([], rows not sent yet read per terminal, the new cursor): see
        `buffer_delivery.pending_per_device` for `after` and `read_up_to`. Re-sent rows may lie
        behind the cursor; they are claimed (`sent_at` set), so the unsent read never has them."""
        due = self._claim_due(limit)
        if due:
            return due, [], after
        groups, after = buffer_delivery.pending_per_device(
            self.store, limit, per_device, after=after, read_up_to=read_up_to, unsent=True
        )
        return [], groups, after

    def _claim_due(self, limit: int) -> list[PendingRow]:
        """Every few seconds: unconfirmed rows whose last send is old enough, claimed."""
        now = time.monotonic()
        if now < self._next_scan:
            return []
        self._next_scan = now + self._scan_every
        older_than = self.mqtt.resend_after * self.stats.backoff
        if not buffer_delivery.any_resend_due(self.store, older_than):
            return []  # the usual case: no write transaction in the drain's read path
        rows = self.store.claim_resends(older_than=older_than, limit=limit)
        if rows:
            # Claimed: they carry a `sent_at` (noted before the drain remembers their batch).
            self._sent_ids.add([record_id_of(r.payload) for r in rows], [r.pk for r in rows], sent=True)
            self._resent(rows)
            self._next_scan = now  # more may be due: look again at the next read
        return rows

    def _resent(self, rows: Sequence[PendingRow]) -> None:
        if not self._confirmed_since_resend:
            self.stats.backoff = min(_MAX_BACKOFF, self.stats.backoff * 2)
        self._confirmed_since_resend = False
        self.stats.resent += len(rows)
        log.info(
            "central_resend",
            punches=len(rows),
            after_seconds=self.mqtt.resend_after * self.stats.backoff,
            backoff=self.stats.backoff,
        )

    def remember_batch(self, device: str, seq: int, pks: list[int], ids: Sequence[str] = ()) -> None:
        """The rows a published batch carries, for a confirmation that names the batch, and
        their record ids (when given), so that a confirmation by id finds them by pk."""
        self._batches.add(device, seq, pks, ids)
        if ids:
            self._sent_ids.add(ids, pks, device=device)

    def acked(self, pks: list[int]) -> None:
        """The broker acknowledged these rows: mark them sent, by the worker thread, unless a
        confirmation delivers them within SENT_MARK_GRACE. Returns at once."""
        with self._lock:
            # The writer only needs waking when this changes when it must next look: nothing was
            # held (it waits without a timeout), or there is more than the memory bound allows. A
            # later hold is never due before the ones it already waits for, and a wake-up for each
            # PUBACK takes the interpreter's lock from the drain's reads.
            wake = self._held.next_due() is None
            self._held.hold(pks, time.monotonic())
            wake = wake or self._held.over_bound()
            self._start_worker()
        if wake:
            self._ready.set()

    def flush_sent(self) -> None:
        """Mark every held row sent now (blocking; for a stop, and for tests)."""
        with self._lock:
            pks = self._held.due(time.monotonic(), everything=True)
        self._mark_sent(pks)

    def _mark_sent(self, pks: list[int]) -> None:
        if not pks:
            return
        self._sent_ids.note_sent(pks)  # before: a failed mark may still have written some
        try:
            self.store.mark_sent(pks)
        except Exception as exc:
            # They stay "not sent" in the buffer: sent again at the next session or start.
            self.stats.errors += 1
            log.error("buffer_mark_sent_failed", rows=len(pks), error=str(exc))

    # --- confirmations (called in worker threads) -----------------------------------------------
    def submit(self, payload: bytes) -> None:
        """Queue one message from `{base}/confirm` and return at once. Two threads take it from
        there: one parses what has queued up and takes its ids out of `SentIds`
        (sync/confirmations_parse.py), the other writes whatever was taken meanwhile together,
        in one buffer transaction, so a busy stream of confirmations costs one commit per round,
        not one per message, and the next round is parsed while one is written."""
        with self._lock:
            self._queue.append(payload)
            self._start_worker()
        self._queued.set()

    def _start_worker(self) -> None:
        """Under self._lock."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="confirmations", daemon=True)
            self._worker.start()
        if self._parser is None or not self._parser.is_alive():
            self._parser = threading.Thread(target=self._parse_work, name="confirmations-parse", daemon=True)
            self._parser.start()

    def _parse_work(self) -> None:
        """Parse queued confirmations and take their ids, then hand them to the writer (`_work`)."""
        while True:
            self._queued.wait()
            with self._lock:
                self._queued.clear()
                payloads, self._queue = self._queue, []
                self._parsing = bool(payloads)
            taken = None
            try:
                taken = self._take(payloads) if payloads else None
            except Exception as exc:
                # Unconfirmed here: sent again after `resend_after` (a duplicate, never a loss).
                self.stats.errors += len(payloads)
                log.error("confirmation_not_parsed", messages=len(payloads), error=str(exc))
            finally:
                with self._lock:
                    if taken is not None:
                        self._taken.append(taken)
                    self._parsing = False
                self._ready.set()

    def _work(self) -> None:
        """The writer: confirmations first (they may spare held rows their "sent" write), then
        the held rows whose grace is over. One thread: the buffer has one writer anyway."""
        while True:
            with self._lock:
                next_due = self._held.next_due()
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            self._ready.wait(timeout)
            with self._lock:
                self._ready.clear()
                parts, self._taken = self._taken, []
                self._writing = bool(parts)
            if parts:
                self._apply_safely(merged(parts))
                # Confirmations that came in while those were written go before any "sent" mark:
                # under a backlog they name the very rows whose grace ran out meanwhile, and
                # marking those sent first would write each of them twice.
                with self._lock:
                    self._writing = False
                    if (self._taken or self._queue or self._parsing) and not self._held.over_bound():
                        continue
            with self._lock:
                due = self._held.due(time.monotonic())
            self._mark_sent(due)

    def idle(self) -> bool:
        """Nothing queued, being parsed or being written (for tests)."""
        with self._lock:
            return not (self._queue or self._parsing or self._taken or self._writing)

    def handle(self, payload: bytes) -> None:
        """Deliver what one message on `{base}/confirm` names, now; never raises."""
        self.handle_many([payload])

    def handle_many(self, payloads: Sequence[bytes]) -> None:
        """Deliver what these messages name, in one transaction, now; never raises."""
        taken = self._take(payloads)
        if taken is not None:
            self._apply_safely(taken)

    def _take(self, payloads: Sequence[bytes]) -> Taken | None:
        """The valid confirmations among `payloads`, their ids taken out of `SentIds` (None when
        none is valid); a malformed one is logged with its payload and counted."""
        confirmations = []
        for payload in payloads:
            self.stats.messages += 1
            try:
                confirmations.append(parse_confirmation(payload))
            except ValueError as exc:
                self.stats.malformed += 1
                log.warning("confirmation_malformed", error=str(exc), payload=shown(payload))
        return take(confirmations, self._sent_ids) if confirmations else None

    def _apply_safely(self, taken: Taken) -> None:
        try:
            self._apply(taken)
        except Exception as exc:
            # Taken out of SentIds but not written: those rows stay unconfirmed and their held
            # PUBACKs are marked sent in time, so they go out again after `resend_after`.
            self.stats.errors += len(taken.confirmations)
            consumers = sorted({c.consumer for c in taken.confirmations})
            log.error("confirmation_not_recorded", consumers=consumers, error=str(exc))

    def _apply(self, taken: Taken) -> None:
        # Rows this process sent are found by pk; a pk that changes nothing was delivered before.
        # Those never marked sent (the usual case: confirmed within the grace) need only the
        # plain delivery mark: one UPDATE where a confirmation takes one per state.
        confirmations, unsent_pks, sent_pks = taken.confirmations, taken.unsent, taken.sent
        other_ids = list(dict.fromkeys(taken.other_ids))
        done_pks = [*unsent_pks, *sent_pks]
        confirmed = repeated = unknown = 0
        if unsent_pks:
            # Their terminals are known (the drain said), so the mark needs no RETURNING; it
            # redoes itself with RETURNING when some were not pending (a repeat).
            delivered = buffer_delivery.mark_delivered(self.store, unsent_pks, taken.devices)
            confirmed += delivered
            repeated += len(unsent_pks) - delivered
        if sent_pks:
            done = self.store.confirm_pks(sent_pks)
            confirmed += done.total
            repeated += len(sent_pks) - done.total
        if other_ids:
            done = self.store.confirm_ids(other_ids)
            confirmed += done.total
            if done.total < len(other_ids):
                # Which of the rest are repeats (already delivered) and which are not ours at all.
                rest = len(other_ids) - done.total
                held = len(self.store.known_ids(other_ids)) - done.total
                repeated, unknown = repeated + held, rest - held
        for batch in (b for c in confirmations for b in c.batches):
            remembered = self._batches.pop(batch.device, batch.seq)
            if remembered is None or len(remembered[0]) != batch.count:
                self.stats.unknown_batches += 1
                continue
            pks, batch_ids = remembered
            self._sent_ids.forget(batch_ids)  # before the commit: a pk found there is pending
            confirmed += self.store.confirm_pks(pks).total
            done_pks.extend(pks)
            self.stats.confirmed_batches += 1
        with self._lock:  # their PUBACKs, held or still to come, need no "sent" write now
            self._held.confirmed(done_pks, time.monotonic())
        self.stats.confirmed += confirmed
        self.stats.repeated += repeated
        self.stats.unknown_ids += unknown
        if confirmed:
            self.stats.last_confirmation_at = time.time()
            self._confirmed_since_resend = True
            self.stats.backoff = 1
        if unknown:
            consumers = sorted({c.consumer for c in confirmations})
            log.info("confirmation_unknown_ids", consumers=consumers, ids=unknown)

    # --- for the status and the retained gateway state ------------------------------------------
    def figures(self) -> dict[str, Any]:
        """Pending and unconfirmed counts and the oldest unconfirmed age (queries the buffer: call
        off the event loop)."""
        return {
            "delivery": "central",
            "pending": self.store.pending_count(),
            "unconfirmed": self.store.unconfirmed_count(),
            "oldest_unconfirmed_age_seconds": self.store.oldest_unconfirmed_age(),
        }

    def gateway_state(
        self, figures: dict[str, Any], *, version: str, started_at: dt.datetime
    ) -> bytes | None:
        """The retained `{base}/state` with `figures`, when they changed enough (`StateThrottle`)."""
        return self._state.message(figures, version=version, started_at=started_at)
