"""The shared ZK pool: a call given up while still queued never starts (shutdown with thousands
of sessions: their queued goodbyes must not each talk to a terminal while the exit joins the pool)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from punchgate.drivers.base import DriverTimeoutError
from punchgate.drivers.zk import session as zk_session
from punchgate.drivers.zk.config import ZkTerminal
from tests.support.waiting import wait_until


def _config(name: str) -> ZkTerminal:
    return ZkTerminal.model_validate(
        {"name": name, "type": "zk", "host": "127.0.0.1", "port": 4370, "transport": "tcp", "timeout": 2.0}
    )


@pytest.mark.parametrize("give_up", ["cancelled", "deadline"])
async def test_a_call_given_up_in_the_queue_never_starts(give_up: str) -> None:
    zk_session.configure_pool(1)
    release = threading.Event()
    started: list[str] = []

    def blocking() -> None:
        started.append("first")
        release.wait(10)

    try:
        first = asyncio.ensure_future(zk_session.ZkSession(_config("a")).run("hold", blocking, deadline=10))
        await asyncio.to_thread(wait_until, lambda: started == ["first"], timeout=5)
        # The pool's one thread is held: this call waits in the queue until given up.
        queued = zk_session.ZkSession(_config("b")).run(
            "goodbye", lambda: started.append("queued"), deadline=10 if give_up == "cancelled" else 0.05
        )
        if give_up == "cancelled":
            task = asyncio.ensure_future(queued)
            await asyncio.sleep(0)  # let it queue
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(DriverTimeoutError):
                await queued
        release.set()
        await first
        # The pool runs in order: a call behind the given-up one shows the queue is through.
        await zk_session.ZkSession(_config("c")).run("after", lambda: started.append("after"))
        assert started == ["first", "after"]
    finally:
        release.set()
        zk_session.configure_pool(zk_session.DEFAULT_POOL_SIZE)


async def test_shutdown_pool_drops_queued_calls() -> None:
    zk_session.configure_pool(1)
    release = threading.Event()
    started: list[str] = []

    def blocking() -> str:
        started.append("first")
        release.wait(10)
        return "done"

    try:
        first = asyncio.ensure_future(zk_session.ZkSession(_config("a")).run("hold", blocking, deadline=10))
        await asyncio.to_thread(wait_until, lambda: started == ["first"], timeout=5)
        # Queued behind the held thread, as the sessions' goodbyes are at shutdown.
        queued = asyncio.ensure_future(
            zk_session.ZkSession(_config("b")).run("goodbye", lambda: started.append("queued"), deadline=10)
        )
        await asyncio.sleep(0)
        zk_session.shutdown_pool()
        with pytest.raises(asyncio.CancelledError):
            await queued  # dropped, never started
        release.set()
        assert await first == "done"  # the call already running finishes
        # A call after it runs on a new pool (an application started again in this process).
        await zk_session.ZkSession(_config("c")).run("later", lambda: started.append("later"))
        assert started == ["first", "later"]
    finally:
        release.set()
        zk_session.configure_pool(zk_session.DEFAULT_POOL_SIZE)


async def test_a_finished_call_is_not_kept_but_an_abandoned_one_still_blocks() -> None:
    """The session forgets a call once it ends (its result or error is not held until the next
    call, issue 18), and still refuses a new call while an abandoned one runs on."""
    session = zk_session.ZkSession(_config("a"))
    result = await session.run("read", lambda: b"x" * 4096)
    assert result == b"x" * 4096
    await asyncio.sleep(0)  # done callbacks run on the loop's next turn
    assert session._inflight is None
    with pytest.raises(DriverTimeoutError):
        await session.run("fails", _raise_timeout)
    await asyncio.sleep(0)
    assert session._inflight is None

    release = threading.Event()
    try:
        with pytest.raises(DriverTimeoutError):  # abandoned past its deadline, still running
            await session.run("stuck", lambda: release.wait(10), deadline=0.05)
        with pytest.raises(DriverTimeoutError, match="still running"):
            await session.run("next", lambda: None)
    finally:
        release.set()
    await asyncio.to_thread(wait_until, lambda: session._inflight is None, timeout=5)
    assert await session.run("next", lambda: 7) == 7


def _raise_timeout() -> None:
    raise DriverTimeoutError("no answer", device="a")
