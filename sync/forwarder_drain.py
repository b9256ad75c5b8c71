"""The forwarder's drain: the buffer's pending punches out to the broker, and their delivery marks.

Separate from the connection (sync/forwarder.py, sync/forwarder_session.py) because this is the
part that keeps the no-loss promise, and it only needs a connected client to publish with:

* read pending rows about READ_AHEAD_BATCHES messages' worth at a time, from where the previous
  read stopped (a replay `rewind`s to the start), the next read already running while one
  read's messages are published. In broker mode a read takes one terminal's
  next `batch_size` rows at a time, terminals in the order of their oldest unread row
  (`buffer_delivery.pending_per_device`), so messages are full however the terminals' rows
  interleave in the buffer (polling through an outage stores a few of each in turn);
* group them per device into messages of `batch_size` records (`BatchAssembler`; a live punch
  goes alone), oldest first per terminal, number each message, and publish at QoS 1 with up to
  `max_in_flight` messages awaiting their PUBACK;
* mark exactly the acknowledged rows delivered, several messages per transaction. A row whose
  PUBACK never came stays pending and goes out again on the next connection: a duplicate (ids
  make it harmless), never a gap.

In central delivery (sync/confirmations.py) the drain reads through `CentralDelivery.next_reads`
(unsent rows, read per terminal as in broker mode, and those due for a re-send, grouped as they
come), tells it which ids each batch carried, and hands it the acknowledged rows instead of
marking them delivered: only a confirmation delivers them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import aiomqtt
import structlog

from punchgate.sync import buffer_delivery
from punchgate.sync.buffer_delivery import DeviceRows
from punchgate.sync.confirmations import CentralDelivery
from punchgate.sync.confirmations_memory import record_id_of
from punchgate.sync.contract import batch_json
from punchgate.sync.forwarder_session import (
    ForwarderStats,
    Publisher,
    SessionTasks,
    set_from_any_thread,
    wait_event,
)
from punchgate.sync.settings import MqttSettings
from punchgate.sync.store import PendingRow, Store
from punchgate.sync.topics import Topics

log = structlog.get_logger(__name__)

# How long the drain sleeps when nothing is pending and nobody calls notify_new_punches;
# a safety net only (e.g. punches added by another process), not the normal wake-up path.
IDLE_POLL_SECONDS = 5.0
# Reading ahead several messages' worth per query keeps SQLite round trips off the hot path.
READ_AHEAD_BATCHES = 10


class BatchAssembler:
    """Packs pending rows (oldest first, mixed devices) into per-device messages, in order.

    Backlog rows of one device are packed `batch_size` to a message; `flush()` returns the
    partial batches (the caller decides when half-full messages should go). A live row goes alone, at once (after that device's older rows), so a punch
    seen as it happens is never held back waiting for company.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._open: dict[str, list[PendingRow]] = {}

    def add(self, rows: Sequence[PendingRow]) -> list[tuple[str, list[PendingRow]]]:
        batches: list[tuple[str, list[PendingRow]]] = []
        for row in rows:
            if row.source == "live":
                chunk = self._open.pop(row.device, None)
                if chunk:
                    batches.append((row.device, chunk))
                batches.append((row.device, [row]))
                continue
            chunk = self._open.setdefault(row.device, [])
            chunk.append(row)
            if len(chunk) >= self.batch_size:
                batches.append((row.device, chunk))
                del self._open[row.device]
        return batches

    def flush(self) -> list[tuple[str, list[PendingRow]]]:
        """Every partial batch, oldest first (each device's own order is already kept)."""
        batches = sorted(self._open.items(), key=lambda item: item[1][0].pk)
        self._open.clear()
        return batches


def group_batches(rows: Sequence[PendingRow], batch_size: int) -> list[tuple[str, list[PendingRow]]]:
    """All of `rows` as per-device messages (see `BatchAssembler`)."""
    assembler = BatchAssembler(batch_size)
    return [*assembler.add(rows), *assembler.flush()]


class Message(NamedTuple):
    """One punch message to publish: a terminal, its rows' pks and records, oldest first, and
    their record ids when the read had them (central delivery's unsent rows)."""

    device: str
    pks: Sequence[int]
    records: Sequence[str]
    ids: Sequence[str] | None = None


def _messages(batches: Sequence[tuple[str, list[PendingRow]]]) -> list[Message]:
    return [Message(device, [r.pk for r in chunk], [r.payload for r in chunk]) for device, chunk in batches]


def messages_of(groups: Sequence[DeviceRows], batch_size: int) -> list[Message]:
    """Per-terminal reads as messages. A read of backlog rows (at most `batch_size`) is one
    message as it stands, no per-row work; one holding a live punch is split as
    `BatchAssembler` splits it (older rows, then the live punch alone, then the rest)."""
    messages: list[Message] = []
    for group in groups:
        if "live" in group.sources or len(group.pks) > batch_size:
            rows = [
                PendingRow(pk, group.device, source, payload)
                for pk, source, payload in zip(group.pks, group.sources, group.payloads, strict=True)
            ]
            messages.extend(_messages(group_batches(rows, batch_size)))
        else:
            messages.append(Message(group.device, group.pks, group.payloads, group.ids or None))
    return messages


class Drain:
    """The buffer's pending rows to the broker; one per forwarder, running in each session."""

    def __init__(
        self,
        *,
        gateway_id: str,
        mqtt: MqttSettings,
        store: Store,
        central: CentralDelivery | None,
        topics: Topics,
        stats: ForwarderStats,
        publisher: Publisher,
        max_in_flight: int,
    ) -> None:
        self.gateway_id = gateway_id
        self.mqtt = mqtt
        self.store = store
        self.central = central  # None in broker mode
        self.topics = topics
        self.stats = stats
        self.publisher = publisher
        self.max_in_flight = max_in_flight
        self.loop: asyncio.AbstractEventLoop | None = None  # the forwarder's, once it runs
        self._wake = asyncio.Event()  # new punches committed
        self._rewind = False  # set by a replay: restart the drain cursor
        self._acked: list[int] = []  # acknowledged pks not yet marked delivered
        self._acked_devices: Counter[str] = Counter()  # the same rows, counted per device
        self._acked_ready = asyncio.Event()

    def notify(self) -> None:
        """Wake the drain at once (call after a commit). Safe from any thread."""
        set_from_any_thread(self.loop, self._wake)

    def rewind(self) -> None:
        """Punches older than the drain's cursor are pending again (a replay): read them too.
        Rows in flight at that moment may go out twice, which ids make harmless."""
        self._rewind = True
        self.notify()

    async def _read_messages(
        self, limit: int, after: int, read_up_to: dict[str, int]
    ) -> tuple[list[Message], int]:
        """The drain's next messages and cursor: pending rows, whole messages per terminal
        (broker mode), or unsent and due rows in pk order (central)."""
        if self.central is None:
            groups, after = await asyncio.to_thread(
                buffer_delivery.pending_per_device,
                self.store,
                limit,
                self.mqtt.batch_size,
                after=after,
                read_up_to=read_up_to,
            )
            return messages_of(groups, self.mqtt.batch_size), after
        due, groups, after = await asyncio.to_thread(
            self.central.next_reads, limit, self.mqtt.batch_size, after=after, read_up_to=read_up_to
        )
        if due:  # re-sends, claimed; they lie behind the cursor, which stays
            return _messages(group_batches(due, self.mqtt.batch_size)), after
        return messages_of(groups, self.mqtt.batch_size), after

    async def run(self, client: aiomqtt.Client, tasks: SessionTasks) -> None:
        window = asyncio.Semaphore(self.max_in_flight)
        read_limit = self.mqtt.batch_size * READ_AHEAD_BATCHES
        after = 0  # every pending pk up to here is in flight or done in this session
        read_up_to: dict[str, int] = {}  # per terminal, beyond `after`
        # The next read, started before this one's messages are published (see below).
        ahead: asyncio.Task[tuple[list[Message], int]] | None = None
        try:
            while True:
                if self._rewind:
                    # Rows went back to pending behind our cursor (a replay): read from the
                    # start, once a read still running (it updates `read_up_to`) is done.
                    if ahead is not None:
                        await asyncio.gather(ahead, return_exceptions=True)
                        ahead = None
                    self._rewind = False
                    after = 0
                    read_up_to.clear()
                if ahead is None:
                    ahead = self._read_ahead(read_limit, after, read_up_to)
                messages, after = await ahead
                ahead = None
                if not messages:
                    await wait_event(self._wake, IDLE_POLL_SECONDS)
                    continue
                seqs = await asyncio.to_thread(self.store.next_batch_seqs, [m.device for m in messages])
                # The next read runs (in its thread) while these messages are grouped, remembered
                # and published: the drain's loop no longer alternates reading and publishing.
                ahead = self._read_ahead(read_limit, after, read_up_to)
                await self._publish_all(client, tasks, window, messages, seqs)
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    def _read_ahead(
        self, limit: int, after: int, read_up_to: dict[str, int]
    ) -> asyncio.Task[tuple[list[Message], int]]:
        """Start the next read. The wake-up flag is cleared first, before the read's snapshot:
        punches committed after it set the flag again, so an empty read never sleeps on them."""
        self._wake.clear()
        return asyncio.ensure_future(self._read_messages(limit, after, read_up_to))

    async def _publish_all(
        self,
        client: aiomqtt.Client,
        tasks: SessionTasks,
        window: asyncio.Semaphore,
        messages: Sequence[Message],
        seqs: Sequence[int],
    ) -> None:
        """Each read is sent as soon as it is grouped, so the broker is never idle while the next
        read runs (carrying partial batches over would starve the pipeline)."""
        for (device, pks, records, ids), seq in zip(messages, seqs, strict=True):
            payload = batch_json(gateway=self.gateway_id, device=device, seq=seq, records=records)
            if self.central is not None:
                if ids is None:  # re-sends and split reads: from the records
                    ids = [record_id_of(record) for record in records]
                self.central.remember_batch(device, seq, list(pks), ids)
            await window.acquire()
            tasks.spawn(self._publish_batch(client, device, payload, pks, window), "mqtt-publish")

    async def _publish_batch(
        self,
        client: aiomqtt.Client,
        device: str,
        payload: bytes,
        pks: Sequence[int],
        window: asyncio.Semaphore,
    ) -> None:
        confirmed = False
        try:
            await self.publisher.publish(client, self.topics.device_punches(device), payload)
            confirmed = True
        finally:
            window.release()
            if not confirmed:
                self.stats.possible_duplicates += len(pks)
        self.stats.batches_published += 1
        self.stats.punches_published += len(pks)
        self._acked.extend(pks)
        self._acked_devices[device] += len(pks)
        self._acked_ready.set()

    async def mark_acked(self) -> None:
        """Mark acknowledged rows delivered, several batches per transaction when they pile up."""
        while True:
            await self._acked_ready.wait()
            await self.flush_acked()

    async def flush_acked(self) -> None:
        self._acked_ready.clear()
        if not self._acked:
            return
        pks, self._acked = self._acked, []
        devices, self._acked_devices = self._acked_devices, Counter()
        if self.central is not None:
            # Acknowledged by the broker is only "sent" until confirmed; the confirmations'
            # thread writes that mark unless a confirmation comes first (sync/confirmations.py).
            self.central.acked(pks)
            return
        try:
            # Shielded: once the rows are handed to the buffer, let the commit finish.
            # The drain knows each row's device: the mark needs no RETURNING (buffer_delivery).
            await asyncio.shield(asyncio.to_thread(buffer_delivery.mark_delivered, self.store, pks, devices))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # They stay pending and are sent again: a duplicate, never a loss.
            self.stats.possible_duplicates += len(pks)
            log.error("buffer_mark_delivered_failed", rows=len(pks), error=str(exc))

    async def flush_sent_if_stopping(self) -> None:
        """Central delivery, stopping: rows still waiting for their confirmation are marked sent
        now, so the next start sends them again after `resend_after`, as for every unconfirmed
        row, not at once (a crash cannot do this: those go again at the start)."""
        task = asyncio.current_task()
        if self.central is None or task is None or not task.cancelling():
            return
        try:
            await asyncio.shield(asyncio.to_thread(self.central.flush_sent))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("buffer_mark_sent_failed", error=str(exc))
