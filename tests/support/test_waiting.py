"""Polling a condition to a deadline, from plain code and from coroutines."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.support.waiting import WaitTimeout, wait_for, wait_for_async, wait_until, wait_until_async


def test_returns_as_soon_as_the_condition_holds() -> None:
    calls = itertools.count(1)
    started = time.monotonic()
    assert wait_for(lambda: next(calls) >= 3, timeout=10, interval=0.01)
    assert time.monotonic() - started < 5


def test_false_at_the_deadline_after_a_last_look() -> None:
    started = time.monotonic()
    assert not wait_for(lambda: False, timeout=0.2, interval=0.05)
    assert 0.2 <= time.monotonic() - started < 2


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout, match=r"the answer not met within 0\.1 s"):
        wait_until(lambda: False, timeout=0.1, message="the answer")
    with pytest.raises(AssertionError, match="late detail"):  # a callable: evaluated at the end
        wait_until(lambda: False, timeout=0.1, message=lambda: "late detail")


def test_abort_ends_the_wait_early_with_its_reason() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="given up: the process exited"):
        wait_until(lambda: False, timeout=30, message="ready", abort=lambda: "the process exited")
    assert time.monotonic() - started < 5


async def test_async_variants_keep_the_event_loop_running() -> None:
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        assert await wait_for_async(lambda: len(ticks) >= 5, timeout=10)
        with pytest.raises(WaitTimeout, match="never"):
            await wait_until_async(lambda: False, timeout=0.1, message="never")
    finally:
        task.cancel()
