"""Which rows this process sent and has not seen confirmed: record id -> pk (sync/confirmations.py).

A confirmation names record ids; the buffer finds a row fastest by its pk, and a row this process
sent and never marked sent needs only the plain delivery mark. `SentIds` remembers, for the rows
the drain published, their pks, their terminal, and which of them may carry a `sent_at`.

Why batches are kept whole until a confirmation needs otherwise: a central consumer usually
confirms what it received in the order it received it, each message's ids in a row (the reference
sink concatenates a flush's messages and cuts the list into chunks). Indexing every id of every
batch at its send (three dict entries a row, on the event loop) and looking every confirmed id up
again cost as much interpreter time as the drain's own reads, which wait for that lock. So a batch
from the drain waits as a whole (`_Batch`, keyed by its first id); a confirmation that lists a
waiting batch's ids from its first, in order (all of them, or the first part, the rest waiting
on under its next id), takes its pks in one step. Anything else (ids out of that order, re-sends,
a "sent" mark on the way) first indexes every waiting batch by id, as all rows were before.

Why a pk found here still names the row of that id: the row was pending when it was sent,
every way this process delivers a row (by id, by batch) forgets its id here, and only
delivered rows are ever purged, so the row is still there, under its pk, and no other row can have
taken its pk (SQLite reuses the rowid of a deleted row only). So a row must never be remembered
twice: a batch waits only when its rows lie beyond every row its terminal had in this memory
before (`_newest_pk`: no waiting batch holds them) and none of them is indexed (a re-send's
claim indexes rows without their terminal); a batch that may repeat a row is indexed with
everything waiting, where an id is one entry, and nothing else ever indexes a waiting row.

Why "maybe sent" is known: a row read as unsent has no `sent_at`, and only two things give it
one, both noted here before they happen: this process's own mark (`note_sent`, which indexes
the waiting batches first) and the claim of a re-send (its rows are added with `sent=True`,
indexed). So a waiting batch's rows never carry one. A row without either is delivered by the
plain delivery mark (one UPDATE); the others by `confirm_pks`, which keeps the unconfirmed count
right. Each row's terminal is kept too when the drain named it, so that plain mark can skip its
RETURNING (`buffer_delivery.mark_delivered` with counts).

Bounded (the oldest forgotten first): a forgotten id is simply confirmed by id, in the buffer's
index.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import cast


@dataclass(slots=True)
class _Batch:
    """A published batch's rows, not indexed by id yet: their ids and pks in the same order."""

    ids: list[str]
    pks: list[int]
    device: str


class SentIds:
    """Record id -> pk of the rows this process sent and has not seen confirmed (module docstring)."""

    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows
        self._pks: OrderedDict[str, int] = OrderedDict()
        self._ids: dict[int, str] = {}  # the reverse, for notes by pk
        self._devices: dict[int, str] = {}  # pk -> its terminal, when the sender said
        self._maybe_sent: set[int] = set()
        # Batches not indexed yet, by their first id, oldest first, and how many rows they hold.
        self._waiting: OrderedDict[str, _Batch] = OrderedDict()
        self._waiting_rows = 0
        # Per terminal, the highest pk remembered with that terminal (a waiting batch is beyond it).
        self._newest_pk: dict[str, int] = {}
        self._lock = threading.Lock()  # the drain adds, the confirmations' parser takes

    def __len__(self) -> int:
        with self._lock:
            return len(self._pks) + self._waiting_rows

    def add(
        self, ids: Sequence[str], pks: Sequence[int], *, sent: bool = False, device: str | None = None
    ) -> None:
        """Remember these rows (one batch's when `device` is given: their terminal)."""
        if len(ids) != len(pks):
            raise ValueError(f"{len(ids)} ids for {len(pks)} pks")
        if not ids:
            return
        with self._lock:
            if (
                device is not None
                and not sent
                and min(pks) > self._newest_pk.get(device, -1)
                and self._ids.keys().isdisjoint(pks)
            ):
                # The usual case: fresh rows beyond any this terminal had here. One entry, no per-row work.
                self._waiting[ids[0]] = _Batch(list(ids), list(pks), device)
                self._waiting_rows += len(ids)
            else:
                self._index_waiting()
                self._index(ids, pks, sent=sent, device=device)
            if device is not None:
                self._newest_pk[device] = max(self._newest_pk.get(device, -1), max(pks))
            self._keep_bound()

    def _index(self, ids: Sequence[str], pks: Sequence[int], *, sent: bool, device: str | None) -> None:
        known = len(self._pks)
        # The dict updates run in C: this is per row.
        self._pks.update(zip(ids, pks, strict=True))
        if len(self._pks) - known != len(ids):
            for record_id in ids:  # some were remembered already: a re-send is the newest again
                self._pks.move_to_end(record_id)
        self._ids.update(zip(pks, ids, strict=True))
        if device is None:
            for pk in pks:
                self._devices.pop(pk, None)
        else:
            self._devices.update(dict.fromkeys(pks, device))
        if sent:
            self._maybe_sent.update(pks)

    def _index_waiting(self) -> None:
        """Every waiting batch indexed by id, oldest first (under the lock)."""
        waiting, self._waiting, self._waiting_rows = self._waiting, OrderedDict(), 0
        for batch in waiting.values():
            self._index(batch.ids, batch.pks, sent=False, device=batch.device)

    def _keep_bound(self) -> None:
        while self._pks and len(self._pks) + self._waiting_rows > self._max_rows:
            _id, pk = self._pks.popitem(last=False)
            self._drop(pk)
        while self._waiting and self._waiting_rows > self._max_rows:
            _first, batch = self._waiting.popitem(last=False)
            self._waiting_rows -= len(batch.ids)

    def _drop(self, pk: int) -> None:
        self._ids.pop(pk, None)
        self._devices.pop(pk, None)
        self._maybe_sent.discard(pk)

    def note_sent(self, pks: Sequence[int]) -> None:
        """These rows are about to be marked sent (only those remembered need noting)."""
        with self._lock:
            self._index_waiting()
            self._maybe_sent.update(pk for pk in pks if pk in self._ids)

    def forget(self, ids: Sequence[str]) -> None:
        self.take_counted(ids)

    def take(self, ids: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
        """(pks of the ids remembered that were never marked sent, pks of those that may have
        been, the ids not remembered); the remembered ones are forgotten."""
        unsent, sent, rest, _devices = self.take_counted(ids)
        return unsent, sent, rest

    def take_counted(self, ids: Sequence[str]) -> tuple[list[int], list[int], list[str], Counter[str] | None]:
        """`take`, and the first list's rows counted per terminal (None when a row's terminal is
        not known: remembered without one)."""
        with self._lock:
            unsent, counted, others = self._take_waiting(ids)
            if not others:
                return unsent, [], [], counted
            self._index_waiting()  # the ids left may be anywhere in a waiting batch
            more, sent, rest, devices = self._take_indexed(others)
        if devices is None:
            return [*unsent, *more], sent, rest, None
        return [*unsent, *more], sent, rest, counted + devices

    def _take_waiting(self, ids: Sequence[str]) -> tuple[list[int], Counter[str], list[str]]:
        """The pks of waiting batches whose ids `ids` lists from their first, in order, counted
        per terminal, and the ids left (under the lock)."""
        waiting = self._waiting
        if not waiting:
            return [], Counter(), list(ids)
        listed = ids if isinstance(ids, list) else list(ids)
        pks: list[int] = []
        counted: Counter[str] = Counter()
        others: list[str] = []
        at, end = 0, len(listed)
        while at < end:
            batch = waiting.get(listed[at])
            if batch is None:
                others.append(listed[at])
                at += 1
                continue
            size = len(batch.ids)
            piece = listed[at : at + size]
            taken = len(piece)
            if piece != (batch.ids if taken == size else batch.ids[:taken]):
                others.append(listed[at])
                at += 1
                continue
            del waiting[listed[at]]
            self._waiting_rows -= size
            if taken < size:  # the list ends inside the batch: the rest waits on
                rest = _Batch(batch.ids[taken:], batch.pks[taken:], batch.device)
                waiting[rest.ids[0]] = rest
                self._waiting_rows += len(rest.ids)
            pks.extend(batch.pks[:taken] if taken < size else batch.pks)
            counted[batch.device] += taken
            at += taken
        return pks, counted, others

    def _take_indexed(
        self, ids: Sequence[str]
    ) -> tuple[list[int], list[int], list[str], Counter[str] | None]:
        # Per id, but each step a C loop (map over the dicts' own methods).
        found = list(map(self._pks.pop, ids, repeat(None)))
        pks = [pk for pk in found if pk is not None]
        rest = [] if len(pks) == len(found) else [i for i, pk in zip(ids, found, strict=True) if pk is None]
        deque(map(self._ids.pop, pks, repeat(None)), maxlen=0)
        terminals = list(map(self._devices.pop, pks, repeat(None)))
        if self._maybe_sent.isdisjoint(pks):
            unsent, sent = pks, []
        else:
            marked = self._maybe_sent
            unsent = [pk for pk in pks if pk not in marked]
            sent = [pk for pk in pks if pk in marked]
            terminals = [t for pk, t in zip(pks, terminals, strict=True) if pk not in marked]
            marked.difference_update(sent)
        devices: Counter[str] | None = None if None in terminals else Counter(cast("list[str]", terminals))
        return unsent, sent, rest, devices
