"""Hostile ZK terminals over real TCP and UDP loopback sockets: each attack of the hardening issue
ends the driver's read, and a worker's session, in time with `protocol_error` and a precise
reason; the pool thread comes back, memory stays put, and a good terminal is read normally
afterwards in the same process.

Reproduced on main before the fix: an envelope announcing 2**31 bytes then a closed connection
left a pool thread spinning for good; endless CMD_DATA took 1.16 GB (TCP) and 3.9 GB (UDP); a
claimed count of 2,147,483,647 records lifted the read's deadline out of reach (+5.4 GB).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.base import DriverTimeoutError, ProtocolError
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.limits import MAX_RECORDS
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.worker import DeviceWorker
from punchgate.gateway.worker_failures import Backoff
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.hostile import fake_zk as fake
from tests.hostile.common import LoopHeartbeat
from tests.hostile.zk_rig import (
    MAX_RSS_GROWTH_MB,
    RssPeak,
    good_terminal_reads_normally,
    loop_errors,
    other_threads,
    terminal,
    threads_settle,
)
from tests.support.waiting import wait_until_async

TIMEOUT = 1.0  # the terminal's configured timeout
CALL_DEADLINE = TIMEOUT * 3 + 5  # the driver's deadline for one call (ZkSession.run)
MARGIN = 1.5  # thread hand-offs, a busy CI machine
MAX_STALL = 0.5  # longest the event loop may go without running the heartbeat
BOTH = ("tcp", "udp")


@dataclass(frozen=True)
class Case:
    name: str
    attack: fake.Attack
    transports: tuple[str, ...]
    reason: str  # the error's message must match this


CASES = [
    Case(
        "envelope announcing 2**31 bytes, one data packet, closed",
        fake.huge_envelope,
        ("tcp",),
        r"oversized reply: the terminal announced a 2147483648-byte packet; at most \d+ were expected",
    ),
    Case(
        "PREPARE_BUFFER announcing 2**31 bytes",
        fake.huge_announcement,
        BOTH,
        r"oversized reply: the terminal announced a 2147483648-byte data set; at most 9800004 are accepted",
    ),
    Case(
        "endless CMD_DATA",
        fake.endless_data,
        BOTH,
        r"endless data: the terminal sent more than the 1204 bytes it announced",
    ),
    Case(
        "endless CMD_DATA answering another request",
        fake.endless_strays,
        BOTH,
        r"endless data: \d+ bytes arrived for a transfer announced as 1204 bytes, and still no end",
    ),
    Case(
        "2,147,483,647 records claimed, capacity 200,000",
        fake.claimed_count(),
        BOTH,
        r"claimed count beyond capacity: the terminal claims 2147483647 records, "
        r"beyond its declared capacity of 200000",
    ),
    Case(
        "2,147,483,647 records claimed, and as much capacity",
        fake.claimed_count(capacity=0x7FFFFFFF),
        BOTH,
        rf"claimed count beyond capacity: the terminal claims 2147483647 records, "
        rf"beyond the {MAX_RECORDS} the driver accepts",
    ),
    Case(
        "2,147,483,647 records claimed, no capacity declared",
        fake.claimed_count(capacity=0),
        BOTH,
        rf"claimed count beyond capacity: .* beyond the {MAX_RECORDS} the driver accepts",
    ),
]
PARAMS = [pytest.param(case, t, id=f"{case.name}-{t}") for case in CASES for t in case.transports]


@pytest.fixture
async def warm() -> AsyncIterator[int]:
    """A good read first, so the pool and the loop's executor have their threads: the baseline."""
    await good_terminal_reads_normally("tcp")
    await asyncio.to_thread(lambda: None)  # the worker's store calls run in the loop's executor
    yield len(other_threads())


@pytest.mark.parametrize(("case", "transport"), PARAMS)
async def test_the_read_ends_in_time_with_the_reason(case: Case, transport: str, warm: int) -> None:
    terminal_ = fake.FakeTerminal(attack=case.attack)
    with fake.serve(terminal_, transport) as peer:
        driver = ZkDriver(terminal(peer.port, transport, timeout=TIMEOUT))
        async with RssPeak() as rss, LoopHeartbeat() as beat:
            await driver.connect()
            await driver.info()
            started = time.monotonic()
            with pytest.raises(ProtocolError) as failure:
                # the hard stop only keeps a broken driver from hanging the suite
                await asyncio.wait_for(driver.read_records(), CALL_DEADLINE * 4)
            elapsed = time.monotonic() - started
            closing = time.monotonic()
            await driver.close()
            close_time = time.monotonic() - closing
    await threads_settle(warm)
    assert re.search(case.reason, str(failure.value)), str(failure.value)
    assert str(failure.value).startswith("hostile: read ")
    assert failure.value.fault == "protocol_error"
    assert elapsed <= 2 * CALL_DEADLINE + MARGIN, f"the read took {elapsed:.2f} s"
    assert close_time <= MARGIN, f"closing took {close_time:.2f} s"
    assert rss.growth_mb < MAX_RSS_GROWTH_MB, f"RSS grew by {rss.growth_mb:.1f} MB"
    assert beat.max_gap < MAX_STALL, f"the event loop stalled for {beat.max_gap:.3f} s"
    await good_terminal_reads_normally(transport)


class Sink:
    def __init__(self) -> None:
        self.notified = 0

    def notify_new_punches(self) -> None:
        self.notified += 1


def make_worker(port: int, transport: str, store: Store, **more: object) -> DeviceWorker:
    options: dict[str, Any] = {"timeout": TIMEOUT, "live": False, "poll_interval": 60, **more}
    config = terminal(port, transport, **options)
    return DeviceWorker(
        terminal=config,
        driver=ZkDriver(config),
        store=store,
        sink=Sink(),
        health=DeviceHealth(config.name),
        timezone="UTC",
        driver_type="zk",
        backoff=Backoff(0.5, 1.0),
        clock=lambda: dt.datetime.now(dt.UTC),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(
        BufferSettings.model_validate({"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0})
    )
    yield opened
    opened.close()


async def stop_worker(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(("case", "transport"), PARAMS)
async def test_a_worker_reports_the_fault_and_retries(
    case: Case, transport: str, warm: int, store: Store
) -> None:
    terminal_ = fake.FakeTerminal(attack=case.attack)
    with loop_errors() as errors:
        with fake.serve(terminal_, transport) as peer:
            worker = make_worker(peer.port, transport, store)
            async with RssPeak() as rss:
                started = time.monotonic()
                task = asyncio.create_task(worker.run())
                await wait_until_async(
                    lambda: worker.health.last_error is not None,
                    timeout=CALL_DEADLINE * 3,
                    message="the worker reports a failed session",
                )
                elapsed = time.monotonic() - started
                # ... and tries again after its backoff, meeting the same attack
                await wait_until_async(
                    lambda: worker.health.failures_total >= 2, timeout=CALL_DEADLINE * 3, message="a retry"
                )
                await stop_worker(task)
        await threads_settle(warm)
    assert worker.health.last_error is not None and re.search(case.reason, worker.health.last_error)
    assert "protocol_error" in worker.health.faults.active
    assert elapsed <= CALL_DEADLINE + MARGIN, f"the fault came after {elapsed:.2f} s"
    assert sum(p.command == zp.CMD_CONNECT for p in terminal_.received) >= 2
    assert rss.growth_mb < MAX_RSS_GROWTH_MB, f"RSS grew by {rss.growth_mb:.1f} MB"
    assert not errors, errors
    await good_terminal_reads_normally(transport)


# ---- a slow terminal ------------------------------------------------------------------------


async def test_slow_terminal_within_the_deadline_is_read(warm: int) -> None:
    """Every byte of every reply 2 ms apart: slow, but each call ends within its deadline."""
    terminal_ = fake.FakeTerminal(records=3, slow=0.002)
    with fake.serve(terminal_, "tcp") as peer:
        driver = ZkDriver(terminal(peer.port, "tcp", timeout=TIMEOUT))
        try:
            await driver.connect()
            assert (await driver.info()).serial_number == fake.SERIAL_NUMBER
            assert len(await driver.read_records()) == 3
        finally:
            await driver.close()
    await threads_settle(warm)


async def test_slow_terminal_beyond_the_deadline_is_a_timeout_not_a_foreign_device(warm: int) -> None:
    """A byte every 0.45 s: never silent for a whole timeout (0.5 s), yet the CONNECT reply
    (16 bytes) takes longer than connecting may (0.5 x 2 + 5 s). Before the fix the first
    byte alone was taken for the reply: "not a ZK terminal", at once."""
    timeout = 0.5
    deadline = timeout * 2 + 5
    terminal_ = fake.FakeTerminal(slow=0.45)
    with fake.serve(terminal_, "tcp") as peer:
        driver = ZkDriver(terminal(peer.port, "tcp", timeout=timeout))
        started = time.monotonic()
        with pytest.raises(DriverTimeoutError) as failure:
            await asyncio.wait_for(driver.connect(), deadline * 3)
        elapsed = time.monotonic() - started
        await driver.close()
    await threads_settle(warm)
    assert failure.value.fault == "timeout"
    assert re.search(
        r"connect tcp://.*: the terminal answers too slowly: no complete answer within 6 s",
        str(failure.value),
    )
    assert deadline - MARGIN <= elapsed <= deadline + MARGIN, f"connect failed after {elapsed:.2f} s"


# ---- a stray live event longer than pyzk's small reads --------------------------------------


async def test_long_live_event_before_short_replies_is_skipped(warm: int) -> None:
    """A 60-byte event before each reply pyzk reads with a 16-byte recv (enable/disable,
    STATE_RRQ, CLEAR_ATTLOG, SET_TIME): acknowledged and skipped, the replies still match."""
    terminal_ = fake.FakeTerminal(attack=fake.long_event_before_short_replies)
    with fake.serve(terminal_, "tcp") as peer:
        driver = ZkDriver(terminal(peer.port, "tcp", timeout=TIMEOUT))
        try:
            await driver.connect()
            info = await driver.info()  # STATE_RRQ among its queries
            assert info.extra["enabled"] is True
            await driver.set_time(dt.datetime(2024, 5, 6, 7, 8, 9))
            assert len(await driver.read_records()) == 30
            await driver.clear_records(30)  # disable, count, CLEAR_ATTLOG, count, enable
        finally:
            await driver.close()
    acks = [p for p in terminal_.received if p.command == zp.CMD_ACK_OK and p.reply == 0]
    short = [p for p in terminal_.received if p.command in fake.SHORT_REPLY_COMMANDS]
    assert len(short) >= 6 and len(acks) == len(short), "every event acknowledged"
    await threads_settle(warm)


# ---- shutdown while a call is in flight --------------------------------------------------------


def silence(terminal_: fake.FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[fake.Step] | None:
    return []  # hears everything, answers nothing


@pytest.mark.parametrize("transport", BOTH)
async def test_shutdown_with_an_abandoned_terminal_is_silent(transport: str, warm: int, store: Store) -> None:
    """A worker cancelled (as the gateway does at shutdown) while its connect waits on a
    terminal that never answers: nothing is logged afterwards, no thread is left behind.
    Before the fix: "Future exception was never retrieved ... Bad file descriptor" (UDP)."""
    terminal_ = fake.FakeTerminal(attack=silence)
    with loop_errors() as errors:
        with fake.serve(terminal_, transport) as peer:
            worker = make_worker(peer.port, transport, store)
            task = asyncio.create_task(worker.run())
            await wait_until_async(lambda: terminal_.received, timeout=5, message="CONNECT sent")
            await stop_worker(task)
        await threads_settle(warm)
    assert not errors, errors


# ---- the worker's own deadline ------------------------------------------------------------------


class StuckDriver:
    """A driver whose read never returns (whatever the cause): only the worker can end it."""

    name = "stuck"

    def __init__(self, inner: ZkDriver) -> None:
        self.inner = inner
        self.reads = 0

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def info(self) -> object:
        return await self.inner.info()

    async def read_records(self) -> list[object]:
        self.reads += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def live(self) -> None:
        return None


async def test_the_worker_ends_a_driver_call_that_never_returns(
    warm: int, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from punchgate.gateway import worker_deadline as worker_module

    monkeypatch.setattr(worker_module, "CALL_DEADLINE_EXTRA", 0.5)
    monkeypatch.setattr(worker_module, "READ_SECONDS_PER_RECORD", 0.0)
    terminal_ = fake.FakeTerminal()
    with fake.serve(terminal_, "tcp") as peer:
        worker = make_worker(peer.port, "tcp", store, timeout=0.1)
        stuck = StuckDriver(ZkDriver(worker.terminal))  # type: ignore[arg-type]
        worker.driver = stuck  # type: ignore[assignment]
        task = asyncio.create_task(worker.run())
        started = time.monotonic()
        await wait_until_async(lambda: worker.health.last_error is not None, timeout=10, message="a fault")
        elapsed = time.monotonic() - started
        await stop_worker(task)
    limit = worker_module.CALL_DEADLINE_FACTOR * 0.1 + 0.5
    assert worker.health.last_error == (
        f"hostile: read records: no result within {limit:.0f} s (the worker's deadline)"
    )
    assert "timeout" in worker.health.faults.active
    assert limit <= elapsed <= limit + MARGIN
    assert stuck.reads == 1
