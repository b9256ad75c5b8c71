"""The gateway-wide bound on full reads: how many at once, and how many records between them."""

from __future__ import annotations

import asyncio

import pytest

from punchgate.gateway.worker_read_limit import FullReadLimiter


async def test_reads_share_a_records_budget_and_a_big_one_runs_alone() -> None:
    limiter = FullReadLimiter(slots=8, records=1000)
    log: list[str] = []
    release: dict[str, asyncio.Event] = {}

    async def read(name: str, records: int) -> None:
        release[name] = asyncio.Event()
        async with limiter.hold(records):
            log.append(f"+{name}")
            await release[name].wait()
            log.append(f"-{name}")

    first = asyncio.create_task(read("a", 600))
    await asyncio.sleep(0)
    second = asyncio.create_task(read("b", 600))  # 1,200 > 1,000: waits for "a"
    big = asyncio.create_task(read("big", 5000))  # more than the budget: alone, in turn
    small = asyncio.create_task(read("c", 10))  # arrives after "big": does not pass it
    await asyncio.sleep(0.05)
    assert log == ["+a"]
    release["a"].set()
    await asyncio.sleep(0.05)
    assert log == ["+a", "-a", "+b"]
    release["b"].set()
    await asyncio.sleep(0.05)
    assert log[-2:] == ["-b", "+big"] and limiter.reads == 1
    release["big"].set()
    await asyncio.sleep(0.05)
    assert log[-2:] == ["-big", "+c"]
    release["c"].set()
    await asyncio.gather(first, second, big, small)
    assert (limiter.reads, limiter.held) == (0, 0)


async def test_slots_bound_small_reads() -> None:
    limiter = FullReadLimiter(slots=3, records=1_000_000)
    running = peak = 0
    gate = asyncio.Event()

    async def read() -> None:
        nonlocal running, peak
        async with limiter.hold(5):
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1

    tasks = [asyncio.create_task(read()) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert peak == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 3 and (limiter.reads, limiter.held) == (0, 0)


async def test_a_cancelled_waiter_leaves_nothing_held_and_lets_the_next_in() -> None:
    limiter = FullReadLimiter(slots=2, records=100)
    gate = asyncio.Event()
    entered: list[str] = []

    async def read(name: str, records: int) -> None:
        async with limiter.hold(records):
            entered.append(name)
            await gate.wait()

    holder = asyncio.create_task(read("holder", 60))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(read("waiter", 60))  # does not fit beside "holder"
    behind = asyncio.create_task(read("behind", 30))  # fits, but waits behind "waiter"
    await asyncio.sleep(0.05)
    assert entered == ["holder"]
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.05)
    assert entered == ["holder", "behind"]
    gate.set()
    await asyncio.gather(holder, behind)
    assert (limiter.reads, limiter.held) == (0, 0)
