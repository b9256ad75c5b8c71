"""The worker's flags (`Flag`, `wait_any`): asyncio.Event's behaviour, without a task or a deque
for every waiting worker (gateway/worker_schedule.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from punchgate.gateway.worker_schedule import Flag, wait_any
from tests.gateway.conftest import Rig
from tests.support.waiting import wait_until_async


async def test_wait_any_returns_when_either_flag_is_set() -> None:
    poll, command = Flag(), Flag()
    waiting = asyncio.create_task(wait_any((poll, command), timeout=60))
    await asyncio.sleep(0)
    assert not waiting.done()
    command.set()
    async with asyncio.timeout(5):
        await waiting
    # Neither flag keeps the finished wait.
    assert poll._waiters is None and command._waiters is None


async def test_a_set_flag_does_not_wait_and_a_cleared_one_does() -> None:
    flag = Flag()
    flag.set()
    async with asyncio.timeout(1):
        assert await flag.wait()
        await wait_any((Flag(), flag), timeout=60)
    flag.clear()
    assert not flag.is_set()
    waiting = asyncio.create_task(flag.wait())
    await wait_until_async(lambda: flag._waiters is not None, timeout=5, message="waiting")
    assert not waiting.done()
    flag.set()
    async with asyncio.timeout(5):
        assert await waiting


async def test_the_timeout_ends_the_wait() -> None:
    flag = Flag()
    async with asyncio.timeout(5):
        await wait_any((flag,), timeout=0.05)
    assert not flag.is_set() and flag._waiters is None


async def test_a_cancelled_wait_is_cancelled_and_forgotten() -> None:
    poll, command = Flag(), Flag()
    waiting = asyncio.create_task(wait_any((poll, command), timeout=60))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert poll._waiters is None and command._waiters is None
    # Set while the cancellation is under way: still cancelled (the worker must stop).
    waiting = asyncio.create_task(wait_any((poll,), timeout=60))
    await asyncio.sleep(0)
    poll.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_worker_waiting_for_its_poll_runs_no_task_but_its_own(rig_factory: Any) -> None:
    """Waiting for either of two asyncio.Events took a task for each, held for the whole wait
    (most workers of a fleet are waiting at any moment); a request still ends the wait."""
    rig: Rig = await rig_factory(records=50)
    await wait_until_async(lambda: rig.worker._poll_due._waiters is not None, timeout=10, message="waiting")
    running = sorted(
        getattr(task.get_coro(), "__qualname__", "?")
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task()
    )
    # The worker's own task, and the emulated terminal's (it serves in this event loop).
    assert running == ["DeviceWorker.run", "TerminalServer._serve_tcp", "TerminalServer._udp_worker"]
    before = rig.worker.polls_counted
    await rig.poll()
    assert rig.worker.polls_counted == before + 1
