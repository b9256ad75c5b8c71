"""Waiting for something to become true: poll a condition until it holds or a deadline passes.

    assert wait_for(lambda: store.pending_count() == 0, timeout=20)        # True / False
    wait_until(lambda: gateway_ready(), timeout=30, message="gateway ready")  # or WaitTimeout
    assert await wait_for_async(lambda: forwarder.connected, timeout=20)   # from a coroutine
    await wait_until_async(lambda: not emulator.session_active, timeout=10)

The condition is checked at once, then every `interval` seconds, and once more at the
deadline. `abort` (optional) is asked after each miss; a non-empty answer ends the wait
early, e.g. "the gateway exited with 1", because waiting longer could not help. The async
variants sleep with `asyncio.sleep`, so the event loop keeps serving emulators and clients.

Synchronise on conditions like these, never on fixed sleeps: a sleep is too short on a busy
machine and wasted time on an idle one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Condition = Callable[[], object]
Abort = Callable[[], str | None]
Message = str | Callable[[], str]


class WaitTimeout(AssertionError):
    """A condition did not hold in time (or waiting was aborted). An AssertionError, so pytest
    reports it as a failed expectation with the message."""


def _outcome(condition: Condition, abort: Abort | None, deadline: float) -> tuple[bool, str | None]:
    """(done, reason): done when the condition holds, or when waiting cannot help any more."""
    if condition():
        return True, None
    reason = abort() if abort is not None else None
    if reason:
        return True, reason
    if time.monotonic() >= deadline:
        return True, "deadline"
    return False, None


def _sleep_for(interval: float, deadline: float) -> float:
    return max(0.0, min(interval, deadline - time.monotonic()))


def _failure(message: Message, timeout: float, reason: str) -> WaitTimeout:
    text = message() if callable(message) else message
    why = f"not met within {timeout:g} s" if reason == "deadline" else f"given up: {reason}"
    return WaitTimeout(f"{text or 'condition'} {why}")


def wait_for(
    condition: Condition, *, timeout: float, interval: float = 0.05, abort: Abort | None = None
) -> bool:
    """Poll `condition()` until it is truthy (True) or the deadline passes / `abort` answers (False)."""
    return _wait(condition, timeout, interval, abort) is None


def wait_until(
    condition: Condition,
    *,
    timeout: float,
    message: Message = "",
    interval: float = 0.05,
    abort: Abort | None = None,
) -> None:
    """Like `wait_for`, but raise `WaitTimeout` naming `message` (a string, or a callable for
    details only known at the end, such as a log tail) when the condition does not hold."""
    reason = _wait(condition, timeout, interval, abort)
    if reason is not None:
        raise _failure(message, timeout, reason)


async def wait_for_async(
    condition: Condition, *, timeout: float, interval: float = 0.05, abort: Abort | None = None
) -> bool:
    """`wait_for` for coroutines: sleeps without blocking the event loop."""
    return await _wait_async(condition, timeout, interval, abort) is None


async def wait_until_async(
    condition: Condition,
    *,
    timeout: float,
    message: Message = "",
    interval: float = 0.05,
    abort: Abort | None = None,
) -> None:
    """`wait_until` for coroutines: sleeps without blocking the event loop."""
    reason = await _wait_async(condition, timeout, interval, abort)
    if reason is not None:
        raise _failure(message, timeout, reason)


def _wait(condition: Condition, timeout: float, interval: float, abort: Abort | None) -> str | None:
    """None when the condition held; otherwise why the wait ended."""
    deadline = time.monotonic() + timeout
    while True:
        done, reason = _outcome(condition, abort, deadline)
        if done:
            return reason
        time.sleep(_sleep_for(interval, deadline))


async def _wait_async(
    condition: Condition, timeout: float, interval: float, abort: Abort | None
) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        done, reason = _outcome(condition, abort, deadline)
        if done:
            return reason
        await asyncio.sleep(_sleep_for(interval, deadline))
