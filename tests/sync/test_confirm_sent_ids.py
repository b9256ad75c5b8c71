"""`SentIds` (sync/confirmations_sent.py) keeps a drain's batches whole until a confirmation needs
them otherwise. Whatever order the confirmations come in, it must answer exactly as a memory
that indexes every id at its send: the same pks as never marked sent, as maybe sent, the same
ids unknown, the same per-terminal counts, and never the same pk twice."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from punchgate.sync.confirmations_sent import SentIds


@dataclass
class Reference:
    """The plain semantics: every id indexed as it is added (what SentIds did before)."""

    pks: dict[str, int] = field(default_factory=dict)
    devices: dict[int, str | None] = field(default_factory=dict)
    maybe_sent: set[int] = field(default_factory=set)

    def add(self, ids: list[str], pks: list[int], *, sent: bool = False, device: str | None = None) -> None:
        for record_id, pk in zip(ids, pks, strict=True):
            self.pks[record_id] = pk
            self.devices[pk] = device
            if sent:
                self.maybe_sent.add(pk)

    def note_sent(self, pks: list[int]) -> None:
        self.maybe_sent.update(pk for pk in pks if pk in self.devices)

    def take(self, ids: list[str]) -> tuple[list[int], list[int], list[str], Counter[str] | None]:
        unsent: list[int] = []
        sent: list[int] = []
        rest: list[str] = []
        terminals: list[str | None] = []
        for record_id in ids:
            pk = self.pks.pop(record_id, None)
            if pk is None:
                rest.append(record_id)
                continue
            device = self.devices.pop(pk)
            if pk in self.maybe_sent:
                self.maybe_sent.discard(pk)
                sent.append(pk)
            else:
                unsent.append(pk)
                terminals.append(device)
        counted = None if None in terminals else Counter(t for t in terminals if t is not None)
        return unsent, sent, rest, counted


def _rid(pk: int) -> str:
    return f"{pk:032x}"


class Workload:
    """A drain's sends and a consumer's confirmations, at random, on both memories at once."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.memory = SentIds(1_000_000)
        self.reference = Reference()
        self.next_pk = 1
        self.batches: list[tuple[list[str], list[int], str]] = []  # every batch sent, in order
        self.unconfirmed: list[list[str]] = []  # batches' ids not confirmed yet, in send order

    def add(self, ids: list[str], pks: list[int], *, sent: bool = False, device: str | None = None) -> None:
        self.memory.add(ids, pks, sent=sent, device=device)
        self.reference.add(ids, pks, sent=sent, device=device)

    def send_fresh(self) -> None:
        device = self.rnd.choice(["door-1", "door-2", "gate", "canteen"])
        size = self.rnd.choice([1, 3, 7, 20])
        pks = list(range(self.next_pk, self.next_pk + size))
        self.next_pk += size
        self._send([_rid(pk) for pk in pks], pks, device)

    def _send(self, ids: list[str], pks: list[int], device: str) -> None:
        self.add(ids, pks, device=device)
        self.batches.append((ids, pks, device))
        self.unconfirmed.append(ids)

    def send_again(self, *, claimed: bool) -> None:
        """Rows sent before go out again: claimed for a re-send (indexed with `sent`, then
        remembered as the drain's batch), or read again after a reconnect (as unsent)."""
        if not self.batches:
            return
        ids, pks, device = self.rnd.choice(self.batches)
        cut = self.rnd.randrange(len(ids))
        ids, pks = ids[cut:], pks[cut:]
        if claimed:
            self.add(ids, pks, sent=True)
        self._send(ids, pks, device)

    def send_from_an_earlier_run(self) -> None:
        """Rows a run before this one sent: claimed for a re-send (indexed with `sent`, no
        terminal) before this memory saw them, then remembered as the drain's batch."""
        device = self.rnd.choice(["door-1", "gate"])
        pks = list(range(self.next_pk, self.next_pk + self.rnd.choice([1, 4])))
        self.next_pk += len(pks)
        ids = [_rid(pk) for pk in pks]
        self.add(ids, pks, sent=True)
        self._send(ids, pks, device)

    def note_sent(self) -> None:
        pks = [
            pk
            for _ids, batch_pks, _d in self.rnd.sample(self.batches, min(2, len(self.batches)))
            for pk in batch_pks
        ]
        self.memory.note_sent(pks)
        self.reference.note_sent(pks)

    def confirmation(self) -> list[str]:
        """What a consumer confirms next, in one of the ways consumers do."""
        way = self.rnd.choice(["message", "flush", "flush", "shuffled", "repeat", "unknown"])
        if way == "message" and self.unconfirmed:
            return self.unconfirmed.pop(0)
        if way == "flush" and self.unconfirmed:
            # A sink: several messages' ids in arrival order, repeats named once, cut in chunks;
            # the chunk that ends inside a message leaves its rest for the next confirmation.
            count = self.rnd.randint(1, len(self.unconfirmed))
            flat = list(dict.fromkeys(i for ids in self.unconfirmed[:count] for i in ids))
            chunk = self.rnd.randint(1, len(flat))
            del self.unconfirmed[:count]
            if flat[chunk:]:
                self.unconfirmed.insert(0, flat[chunk:])
            return flat[:chunk]
        if way == "shuffled" and self.batches:
            ids = [i for ids, _p, _d in self.rnd.sample(self.batches, min(3, len(self.batches))) for i in ids]
            self.rnd.shuffle(ids)
            return list(dict.fromkeys(ids))
        if way == "repeat" and self.batches:
            return list(self.rnd.choice(self.batches)[0])
        return [_rid(10**9 + self.rnd.randrange(1000)), *(self.batches[-1][0][:2] if self.batches else [])]

    def confirm(self) -> None:
        ids = self.confirmation()
        got = self.memory.take_counted(ids)
        expected = self.reference.take(ids)
        assert sorted(got[0]) == sorted(expected[0]), "never marked sent"
        assert sorted(got[1]) == sorted(expected[1]), "maybe marked sent"
        assert got[2] == expected[2], "not remembered"
        assert got[3] == expected[3], "per-terminal counts"
        assert len(set(got[0]) | set(got[1])) == len(got[0]) + len(got[1]), "a pk taken twice"


@pytest.mark.parametrize("seed", range(40))
def test_any_order_of_confirmations_answers_as_if_every_id_were_indexed(seed: int) -> None:
    work = Workload(seed)
    steps = [work.send_fresh] * 6 + [work.confirm] * 5 + [work.note_sent]
    steps += [lambda: work.send_again(claimed=True), lambda: work.send_again(claimed=False)]
    steps += [work.send_from_an_earlier_run]
    for _ in range(400):
        work.rnd.choice(steps)()
    while work.unconfirmed:
        work.confirm()
    assert len(work.memory) == len(work.reference.pks)


def test_a_batch_confirmed_as_sent_is_taken_whole_and_counted() -> None:
    memory = SentIds(1000)
    memory.add(["a", "b", "c"], [1, 2, 3], device="door-1")
    memory.add(["d", "e"], [4, 5], device="gate")
    assert memory.take_counted(["a", "b", "c", "d", "e", "x"]) == (
        [1, 2, 3, 4, 5],
        [],
        ["x"],
        Counter({"door-1": 3, "gate": 2}),
    )
    assert len(memory) == 0
    assert memory.take_counted(["a"]) == ([], [], ["a"], Counter())  # once only


def test_a_chunk_that_ends_inside_a_batch_leaves_the_rest_to_the_next() -> None:
    memory = SentIds(1000)
    memory.add(["a", "b", "c", "d"], [1, 2, 3, 4], device="door-1")
    assert memory.take(["a", "b"]) == ([1, 2], [], [])
    assert memory.take(["c", "d"]) == ([3, 4], [], [])
    assert len(memory) == 0


def test_a_row_sent_again_after_a_reconnect_is_remembered_once() -> None:
    memory = SentIds(1000)
    memory.add(["a", "b"], [1, 2], device="door-1")
    memory.add(["b", "c"], [2, 3], device="door-1")  # read again (unconfirmed), with a newer row
    assert len(memory) == 3
    assert memory.take(["b", "c"]) == ([2, 3], [], [])
    assert memory.take(["a", "b"]) == ([1], [], ["b"])


def test_rows_noted_sent_while_their_batch_waits_come_back_as_maybe_sent() -> None:
    memory = SentIds(1000)
    memory.add(["a", "b"], [1, 2], device="door-1")
    memory.note_sent([2])
    assert memory.take(["a", "b"]) == ([1], [2], [])


def test_rows_claimed_from_an_earlier_run_come_back_as_maybe_sent() -> None:
    memory = SentIds(1000)
    memory.add(["a", "b"], [7, 8], sent=True)  # the re-send's claim: they carry a `sent_at`
    memory.add(["a", "b"], [7, 8], device="door-1")  # the drain's batch of them
    assert memory.take(["a", "b"]) == ([], [7, 8], [])


def test_the_memory_stays_bounded_forgetting_the_oldest_first() -> None:
    memory = SentIds(5)
    memory.add(["a", "b", "c"], [1, 2, 3], device="door-1")
    memory.add(["d", "e", "f"], [4, 5, 6], device="door-1")
    assert len(memory) <= 5
    unsent, _sent, rest = memory.take(["d", "e", "f"])
    assert unsent == [4, 5, 6] and rest == []
