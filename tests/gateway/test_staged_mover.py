"""Staged punches into the outbox (`gateway/staged_mover.py`): when a move is due (`MovePolicy`,
pure, on a moved clock), and the mover against a real buffer file: it moves what is staged,
what an earlier run left staged, and after a failed move tries again, losing nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from punchgate.gateway import staged_mover
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.staged_mover import (
    MAX_WAIT,
    MAX_WAITING,
    STAGE_MIN,
    STREAM_GAP,
    MovePolicy,
    StagedMover,
)
from punchgate.sync.buffer_staging import Moved
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches
from tests.support.waiting import wait_until_async
from tests.zk_push.test_receiver import CountingForwarder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_move_is_due_at_once_unless_a_backlog_part_came_within_the_gap() -> None:
    clock = Clock()
    policy = MovePolicy(clock)
    assert policy.wait(0) == 0.0  # nothing staged yet: an earlier run's rows go first thing

    policy.staged(STAGE_MIN - 1)  # a real-time post behind its terminal's backlog
    assert policy.wait(STAGE_MIN - 1) == 0.0

    policy.staged(STAGE_MIN)
    assert policy.wait(STAGE_MIN) == pytest.approx(STREAM_GAP)
    clock.now += STREAM_GAP / 2
    assert policy.wait(STAGE_MIN) == pytest.approx(STREAM_GAP / 2)
    clock.now += STREAM_GAP / 2
    assert policy.wait(STAGE_MIN) == 0.0  # the terminal stopped sending: the backlog is in


def test_a_backlog_that_never_ends_holds_moves_back_for_max_wait_at_most() -> None:
    clock = Clock()
    policy = MovePolicy(clock)
    started = clock.now
    while clock.now - started < MAX_WAIT - STREAM_GAP:
        policy.staged(500)
        assert policy.wait(1000) > 0
        clock.now += STREAM_GAP / 2
    policy.staged(500)
    assert policy.wait(1000) == pytest.approx(started + MAX_WAIT - clock.now)
    clock.now = started + MAX_WAIT
    policy.staged(500)
    assert policy.wait(1000) == 0.0
    # Once everything moved, the next backlog may be held back again.
    policy.all_moved()
    policy.staged(500)
    assert policy.wait(500) == pytest.approx(STREAM_GAP)


def test_too_many_staged_punches_move_even_while_a_backlog_streams() -> None:
    policy = MovePolicy(Clock())
    policy.staged(500)
    assert policy.wait(MAX_WAITING - 1) > 0
    assert policy.wait(MAX_WAITING) == 0.0


def test_once_the_listener_closed_nothing_waits_for_a_backlog() -> None:
    policy = MovePolicy(Clock())
    policy.staged(500)
    assert policy.wait(500) > 0
    policy.uploads_over = True  # StagedMover.uploads_over(), at a stop
    assert policy.wait(500) == 0.0


class App:
    """What the mover uses of the gateway's Application, with a real buffer file."""

    def __init__(self, tmp_path: Path) -> None:
        settings = BufferSettings.model_validate({"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0})
        self.store: Store | None = Store.open(settings)
        self.forwarder = CountingForwarder()
        self.devices = {name: DeviceHealth(name) for name in ("door-1", "door-2")}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    made = App(tmp_path)
    yield made
    assert made.store is not None
    made.store.close()


async def run_mover(mover: StagedMover) -> asyncio.Task[None]:
    return asyncio.create_task(mover.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_what_an_earlier_run_staged_is_moved_at_start(app: App) -> None:
    assert app.store is not None
    staged = make_punches("door-1", 120) + make_punches("door-2", 60)
    app.store.add_or_stage(staged[:120], stage=True)
    app.store.add_or_stage(staged[120:], stage=True)
    mover = StagedMover(app)  # type: ignore[arg-type]
    task = await run_mover(mover)
    try:
        await wait_until_async(lambda: app.store is not None and not app.store.staged_count(), timeout=10)
    finally:
        await stop(task)
    assert app.store.pending_devices() == {"door-1": 120, "door-2": 60}
    assert app.forwarder.notified >= 1
    assert app.devices["door-1"].punches_new_total == 120
    assert app.devices["door-2"].punches_new_total == 60


async def test_a_backlog_part_is_moved_once_the_terminal_stops_sending(app: App) -> None:
    assert app.store is not None
    clock = Clock()
    mover = StagedMover(app, MovePolicy(clock))  # type: ignore[arg-type]
    task = await run_mover(mover)
    try:
        part = make_punches("door-1", 500)
        app.store.add_or_stage(part, stage=True)
        mover.staged(len(part))
        clock.now += STREAM_GAP  # no next part came: on its next look the mover moves it
        mover.staged(0)  # a wake-up, as a later (empty) post gives
        await wait_until_async(lambda: app.store is not None and not app.store.staged_count(), timeout=10)
    finally:
        await stop(task)
    assert app.store.pending_count("door-1") == 500
    assert mover.moved == 500


async def test_a_failed_move_leaves_the_punches_staged_and_is_tried_again(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = app.store
    assert store is not None
    monkeypatch.setattr(staged_mover, "RETRY_AFTER", 0.05)
    real_move = store.move_staged
    failures: list[int] = []

    def failing_once(limit: int) -> Moved:
        if not failures:
            failures.append(limit)
            raise OSError("disk I/O error")
        return real_move(limit)

    monkeypatch.setattr(store, "move_staged", failing_once)
    store.add_or_stage(make_punches("door-1", 80), stage=True)
    mover = StagedMover(app)  # type: ignore[arg-type]
    task = await run_mover(mover)
    try:
        await wait_until_async(lambda: not store.staged_count(), timeout=10)
    finally:
        await stop(task)
    assert mover.failures == 1
    assert store.pending_count("door-1") == 80
    assert store.recount_pending()
