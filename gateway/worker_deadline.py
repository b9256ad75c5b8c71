"""The worker's own deadline around every driver call.

Every driver call of a `DeviceWorker` runs under a deadline of the worker's own, on top of the
driver's, so a driver that never returns cannot hold its worker. Kept apart from the worker so
the rule (how long a call may take, what passing it raises) reads in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from punchgate.drivers.base import DriverTimeoutError
from punchgate.drivers.config import TerminalConfig

T = TypeVar("T")

# Every driver call runs under a deadline of the worker's own, on top of the driver's: a
# driver that never returns (a thread stuck in a recv, a loop a terminal keeps feeding) must
# not hold its worker. The deadline grows with the terminal's configured timeout and retries;
# for a full read, also with the log the terminal can hold (its declared capacity, capped),
# never with the count it claims to hold now. It is a safety net, far above the drivers' own
# deadlines, which end a call first and say why.
CALL_DEADLINE_FACTOR = 8
CALL_DEADLINE_EXTRA = 15.0
CALL_TIMEOUT_DEFAULT = 10.0  # for a terminal type without a `timeout` key
READ_SECONDS_PER_RECORD = 0.02  # a 9600-baud serial line carries about 70 records a second
READ_ALLOWANCE_RECORDS = 200_000  # the read allowance stops growing here, whatever the capacity


def plain_call_limit(terminal: TerminalConfig) -> float:
    """Seconds one driver call may take, a read's allowance aside."""
    timeout = float(getattr(terminal, "timeout", CALL_TIMEOUT_DEFAULT))
    attempts = 1 + int(getattr(terminal, "retries", 0))
    return CALL_DEADLINE_FACTOR * timeout * attempts + CALL_DEADLINE_EXTRA


def read_allowance(capacity: int | None) -> float:
    """Seconds a read of a log of that capacity may take beyond the plain limit."""
    records = min(capacity, READ_ALLOWANCE_RECORDS) if capacity else READ_ALLOWANCE_RECORDS
    return READ_SECONDS_PER_RECORD * records


async def bounded(device: str, what: str, call: Awaitable[T], seconds: float) -> T:
    """Await one driver call under the worker's deadline; DriverTimeoutError when it passes."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await call
    except TimeoutError:
        if not deadline.expired():
            raise  # the driver's own, not ours
        raise DriverTimeoutError(
            f"{what}: no result within {seconds:.0f} s (the worker's deadline)", device=device
        ) from None
