"""Group commit (`gateway/commit_group.py`) against a real buffer file: what several workers
hand over within the gather time is one commit, each worker learns what of its own punches was
new, a refusal is each worker's own, a live punch does not wait, and nothing handed over is
lost when its worker is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from punchgate.gateway.commit_group import CommitGroup
from punchgate.sync.audit_verify import verify
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import BufferFullError, Store
from tests.support.factories import make_punches

NEVER = 3600.0  # a gather time no test waits out: only `urgent`, the size bound or close() write


class CountingSink:
    def __init__(self) -> None:
        self.notices = 0

    def notify_new_punches(self) -> None:
        self.notices += 1


class CountingStore(Store):
    commits = 0

    def add_punches(self, punches: object) -> list[str]:
        self.commits += 1
        return super().add_punches(punches)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    yield from _store(tmp_path)


def _store(tmp_path: Path, **options: object) -> Iterator[CountingStore]:
    settings = BufferSettings.model_validate(
        {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, **options}
    )
    opened = CountingStore.open(settings)
    assert isinstance(opened, CountingStore)
    yield opened
    opened.close()
    assert verify(tmp_path / "buffer.db").ok


async def _handed_over(group: CommitGroup, count: int) -> None:
    """Until `count` parts wait in the group (the workers' tasks have run up to their await)."""
    while len(group._waiting) < count:
        await asyncio.sleep(0)


async def test_parts_handed_over_together_are_one_commit_and_each_gets_its_own_ids(
    store: CountingStore,
) -> None:
    sink = CountingSink()
    group = CommitGroup(store, sink, gather=NEVER)
    known = make_punches("door-2", 3)
    store.add_punches(known)
    commits_before = store.commits
    parts = [make_punches("door-1", 4), make_punches("door-2", 5), make_punches("door-3", 2)]
    workers = [asyncio.ensure_future(group.add(part, urgent=False)) for part in parts]
    await _handed_over(group, 3)
    assert not any(w.done() for w in workers)  # nothing is written before the gather is over

    await group.close()

    assert [w.result() for w in workers] == [
        [p.id for p in parts[0]],
        [p.id for p in parts[1][3:]],  # the first three were stored already
        [p.id for p in parts[2]],
    ]
    assert store.commits - commits_before == 1 and group.commits == 1
    assert sink.notices == 1
    assert store.punch_count() == 3 + 4 + 2 + 2


async def test_a_live_punch_is_written_at_once_with_what_waits_beside_it(store: CountingStore) -> None:
    sink = CountingSink()
    group = CommitGroup(store, sink, gather=NEVER)
    polled = asyncio.ensure_future(group.add(make_punches("door-1", 3), urgent=False))
    await _handed_over(group, 1)

    live = await asyncio.wait_for(group.add(make_punches("door-2", 1), urgent=True), timeout=30)

    assert len(live) == 1
    assert len(await asyncio.wait_for(polled, timeout=30)) == 3  # it went along
    assert group.commits == 1


async def test_enough_waiting_punches_are_written_without_waiting_out_the_gather(
    store: CountingStore,
) -> None:
    group = CommitGroup(store, CountingSink(), gather=NEVER, max_punches=10)
    first = asyncio.ensure_future(group.add(make_punches("door-1", 6), urgent=False))
    await _handed_over(group, 1)
    second = await asyncio.wait_for(group.add(make_punches("door-2", 6), urgent=False), timeout=30)
    assert len(second) == 6 and len(first.result()) == 6


async def test_a_refusal_is_the_worker_s_own_and_the_others_are_stored(tmp_path: Path) -> None:
    for store in _store(tmp_path, max_pending=10):
        sink = CountingSink()
        group = CommitGroup(store, sink, gather=NEVER)
        fits = make_punches("door-1", 4)
        too_many = make_punches("door-2", 8)  # 6 more fit under max_pending, 2 do not
        workers = [
            asyncio.ensure_future(group.add(fits, urgent=False)),
            asyncio.ensure_future(group.add(too_many, urgent=False)),
        ]
        await _handed_over(group, 2)
        await group.close()

        assert workers[0].result() == [p.id for p in fits]
        with pytest.raises(BufferFullError) as refused:
            workers[1].result()
        assert refused.value.stored == [p.id for p in too_many[:6]]
        assert store.punch_count() == 10
        assert sink.notices == 1


async def test_a_worker_cancelled_while_its_punches_wait_does_not_lose_them(store: CountingStore) -> None:
    group = CommitGroup(store, CountingSink(), gather=NEVER)
    part = make_punches("door-1", 5)
    worker = asyncio.ensure_future(group.add(part, urgent=False))
    await _handed_over(group, 1)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker

    await group.close()  # the gateway stopping

    assert store.punch_count() == 5


async def test_after_the_gather_time_the_parts_are_written_without_a_close(store: CountingStore) -> None:
    group = CommitGroup(store, CountingSink(), gather=0.01)
    ids = await asyncio.wait_for(group.add(make_punches("door-1", 2), urgent=False), timeout=30)
    assert len(ids) == 2 and group.commits == 1
