"""Polls cost what is new, and never at the price of a punch.

A device worker against the ZK emulator over real loopback TCP, with a real buffer file. The
terminal's record count, and what the live stream delivered, decide whether a poll reads the
log at all; a read normalises only the records after the part the previous read stored; the
buffer is written only when something changed. The guarantee stays: a count that does not add
up reads in full (after a reconnect or a restart too), and a log cleared and refilled to the
same count is read within `reconcile_polls` polls, across a restart of the gateway as well.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway import worker_commit as worker_module
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.normalize import normalize_punch, record_id
from punchgate.gateway.worker import DeviceWorker
from punchgate.gateway.worker_failures import Backoff
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.waiting import wait_until_async
from tests.support.zk import listening_for_punches

SERIAL = "POLLCOST0001"


class CountingDriver(ZkDriver):
    """The real driver, counting whole-log reads."""

    reads = 0

    async def read_records(self, progress: Callable[[int, int], None] | None = None) -> list[RawPunch]:
        self.reads += 1
        return await super().read_records(progress)

    def read_record_chunks(self) -> AsyncGenerator[list[RawPunch], None]:
        self.reads += 1
        return super().read_record_chunks()


class CountingStore(Store):
    """The real store, counting the writes a poll might make."""

    meta_writes = 0
    commits = 0

    def set_device_meta(self, device: str, data: dict[str, Any]) -> None:
        self.meta_writes += 1
        super().set_device_meta(device, data)

    def add_punches(self, punches: Any) -> list[str]:
        self.commits += 1
        return super().add_punches(punches)


class Sink:
    def notify_new_punches(self) -> None:
        pass


@dataclass
class Rig:
    emulator: ZkEmulator
    driver: CountingDriver
    store: CountingStore
    worker: DeviceWorker
    normalised: list[int] = field(default_factory=lambda: [0])
    # Stops the worker and starts another on the same buffer and terminal (a gateway restart);
    # its clock: how far ahead of now (seconds) the new gateway's clock runs.
    restart: Callable[..., Any] = field(default=lambda **_: None)

    async def poll(self) -> None:
        """Ask for a poll and wait until it is done (counted or read)."""
        before = self.worker.polls_counted + self.worker.full_reads
        self.worker.request_poll()
        await wait_until_async(
            lambda: self.worker.polls_counted + self.worker.full_reads > before, timeout=20, message="a poll"
        )

    def stored_ids(self) -> set[str]:
        return self.store.all_ids()

    def terminal_ids(self) -> set[str]:
        return {
            record_id(
                SERIAL, RawPunch(user_id=r.user_id, timestamp=r.timestamp, state=r.state, verify=r.verify)
            )
            for r in self.emulator.records
            if r.timestamp is not None
        }


def stored_at_least(rig: Rig, count: int) -> bool:
    return len(rig.stored_ids()) >= count


@pytest.fixture
async def rig_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[ZkEmulator, asyncio.Task[None], Store]] = []

    async def make(*, records: int, live: bool = False, **worker_options: Any) -> Rig:
        emulator = ZkEmulator(serial_number=SERIAL, transports=("tcp",))
        emulator.generate_log(records=records, days=10, users=20, seed=7)
        await emulator.start()
        config = ZkTerminal.model_validate(
            {
                "name": "door",
                "type": "zk",
                "host": "127.0.0.1",
                "port": emulator.tcp_port,
                "timeout": 3.0,
                "live": live,
                "poll_interval": worker_options.pop("poll_interval", 3600),
            }
        )
        store = CountingStore.open(
            BufferSettings.model_validate({"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0})
        )
        assert isinstance(store, CountingStore)

        def build(ahead: float = 0.0) -> DeviceWorker:
            def clock() -> dt.datetime:
                return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ahead)

            return DeviceWorker(
                terminal=config,
                driver=CountingDriver(config),
                store=store,
                sink=Sink(),
                health=DeviceHealth("door"),
                timezone="UTC",
                driver_type="zk",
                backoff=Backoff(0.2, 0.5),
                clock=clock,
                **worker_options,
            )

        worker = build()
        assert isinstance(worker.driver, CountingDriver)
        rig = Rig(emulator, worker.driver, store, worker)

        async def restart(*, ahead: float = 0.0) -> None:
            old = started.pop()[1]
            old.cancel()
            async with asyncio.timeout(60):
                await asyncio.gather(old, return_exceptions=True)
            rig.worker = build(ahead)
            assert isinstance(rig.worker.driver, CountingDriver)
            rig.driver = rig.worker.driver
            started.append((emulator, asyncio.create_task(rig.worker.run()), store))
            await wait_until_async(
                lambda: rig.worker.full_reads + rig.worker.polls_counted >= 1,
                timeout=30,
                message="a first poll",
            )

        rig.restart = restart
        real = normalize_punch

        def counted(*args: Any, **kwargs: Any) -> Any:
            rig.normalised[0] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(worker_module, "normalize_punch", counted)
        task = asyncio.create_task(worker.run())
        started.append((emulator, task, store))
        await wait_until_async(lambda: worker.full_reads >= 1, timeout=30, message="the first full read")
        return rig

    yield make
    for emulator, task, store in started:
        task.cancel()
        # The terminal goes away first, so nothing the worker may still wait on stays open.
        await emulator.stop()
        async with asyncio.timeout(60):
            await asyncio.gather(task, return_exceptions=True)
        store.close()


async def test_a_poll_with_nothing_new_reads_nothing_and_writes_nothing(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=500)
    assert rig.stored_ids() == rig.terminal_ids()
    reads, writes, commits = rig.driver.reads, rig.store.meta_writes, rig.store.commits
    rig.normalised[0] = 0
    for _ in range(5):
        await rig.poll()
    assert rig.worker.polls_counted == 5
    assert rig.driver.reads == reads, "a poll with the same count read the log"
    assert (rig.store.meta_writes, rig.store.commits) == (writes, commits), "a poll with nothing new wrote"
    assert rig.normalised[0] == 0


async def test_new_records_are_read_and_only_they_are_normalised(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=500)
    rig.normalised[0] = 0
    for user in ("1", "2", "3"):
        rig.emulator.add_punch(user, state=1)
    await rig.poll()
    assert rig.worker.full_reads == 2 and rig.driver.reads == 2
    assert rig.normalised[0] == 3, "records stored by the previous read were normalised again"
    assert rig.stored_ids() == rig.terminal_ids()


async def test_live_punches_make_the_count_add_up(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=200, live=True)
    # The stream is open once the worker listens; punches arrive without a poll.
    await wait_until_async(lambda: listening_for_punches(rig.emulator), timeout=10)
    for n, user in enumerate(("4", "5"), start=len(rig.stored_ids()) + 1):
        rig.emulator.add_punch(user)
        await wait_until_async(partial(stored_at_least, rig, n), timeout=10, message="a live punch")
    reads = rig.driver.reads
    await rig.poll()
    assert rig.worker.polls_counted == 1 and rig.driver.reads == reads
    assert rig.stored_ids() == rig.terminal_ids()


async def test_a_count_that_does_not_add_up_reads_in_full(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=300)
    await rig.emulator.set_fault("log_cleared")  # fewer records than the gateway read
    rig.emulator.add_punch("6")
    await rig.poll()
    assert rig.worker.full_reads == 2 and rig.worker.polls_counted == 0
    assert rig.terminal_ids() <= rig.stored_ids()
    assert "log_reset" in rig.worker.health.faults.active


async def test_a_log_cleared_and_refilled_to_the_same_count_is_read_within_the_bound(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(records=40, reconcile_polls=3)
    await rig.emulator.set_fault("log_cleared")
    start = rig.emulator.now() - dt.timedelta(hours=2)
    for n in range(40):  # the same count: 40
        rig.emulator.add_punch(str(1 + n % 20), start + dt.timedelta(minutes=n), state=n % 2)
    new = rig.terminal_ids() - rig.stored_ids()
    assert len(new) == 40
    await rig.poll()
    await rig.poll()  # the count agrees: these two polls cannot see the new log
    assert rig.worker.polls_counted == 2
    await rig.poll()  # the third poll since the last full read reads in full, whatever the count
    assert rig.worker.full_reads == 2
    assert new <= rig.stored_ids(), "records of a refilled log were never stored"
    # The read found the log was not the one it had stored: every record was checked.
    assert rig.normalised[0] == 80


async def test_a_reconnect_reads_in_full_when_the_count_changed(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=100)
    await rig.emulator.set_fault("restart", downtime=0.2)
    rig.worker.request_poll()  # the poll finds the session gone: the worker connects again
    await wait_until_async(
        lambda: rig.worker.polls_counted >= 1, timeout=30, message="a poll after reconnecting"
    )
    assert rig.driver.reads == 1 and rig.worker.full_reads == 1, "the same count was read again"
    rig.emulator.add_punch("8")
    await rig.emulator.set_fault("restart", downtime=0.2)
    rig.worker.request_poll()
    await wait_until_async(
        lambda: rig.worker.full_reads >= 2, timeout=30, message="a read after reconnecting"
    )
    assert rig.driver.reads == 2
    # The log grew: the read skipped what it had stored and normalised the new record only.
    assert rig.normalised[0] == 101
    assert rig.stored_ids() == rig.terminal_ids()


async def test_a_restarted_gateway_answers_by_the_count_what_it_stored_before(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(records=300)
    await rig.restart()
    assert (rig.worker.polls_counted, rig.driver.reads) == (1, 0), "the restart read the log again"
    assert rig.worker.health.last_punch_at is not None, "when the terminal was last used was forgotten"
    rig.emulator.add_punch("9")  # punched while it runs again: read, only the new record normalised
    await rig.poll()
    assert rig.driver.reads == 1 and rig.normalised[0] == 301
    assert rig.stored_ids() == rig.terminal_ids()


async def test_a_log_refilled_while_the_gateway_was_down_is_read_within_the_bound(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(records=40, reconcile_polls=3)
    await rig.emulator.set_fault("log_cleared")
    start = rig.emulator.now() - dt.timedelta(hours=2)
    for n in range(40):  # the same count: the restarted gateway's count cannot see it
        rig.emulator.add_punch(str(1 + n % 20), start + dt.timedelta(minutes=n), state=n % 2)
    new = rig.terminal_ids() - rig.stored_ids()
    await rig.restart()
    await rig.poll()
    assert (rig.worker.polls_counted, rig.driver.reads) == (2, 0)
    await rig.poll()  # the third since the last whole-log read, a restart in between
    assert rig.driver.reads == 1 and new <= rig.stored_ids()
    # Down for longer than the bound (3 polls of an hour): the first poll reads in full.
    await rig.emulator.set_fault("log_cleared")
    for n in range(40):
        rig.emulator.add_punch(str(1 + n % 20), start + dt.timedelta(minutes=90 + n), state=n % 2)
    new = rig.terminal_ids() - rig.stored_ids()
    await rig.restart(ahead=3 * 3600)
    assert (rig.worker.polls_counted, rig.driver.reads) == (0, 1)
    assert len(new) == 40 and new <= rig.stored_ids()


async def test_a_read_checks_known_ids_through_the_unique_index_of_its_insert(rig_factory: Any) -> None:
    """The known-id check costs no query of its own: the new records go to one
    `INSERT ... ON CONFLICT (id) DO NOTHING`, whose unique index skips what the file holds."""
    rig: Rig = await rig_factory(records=100)
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if re.search(r"\bpunches\b", statement):
            statements.append(" ".join(statement.split()))

    event.listen(rig.store._engine, "before_cursor_execute", note)
    try:
        rig.emulator.add_punch("7")
        await rig.poll()
    finally:
        event.remove(rig.store._engine, "before_cursor_execute", note)
    inserts = [s for s in statements if s.upper().startswith("INSERT INTO PUNCHES")]
    assert len(inserts) == 1 and "ON CONFLICT (id) DO NOTHING" in inserts[0], statements
    assert not [s for s in statements if s.upper().startswith("SELECT")], statements


async def test_polls_fall_due_on_the_grid_and_lag_counts_from_the_due_time(rig_factory: Any) -> None:
    began = time.monotonic()
    rig: Rig = await rig_factory(records=20, poll_interval=1, first_poll_in=0.4, phase=0.1)
    assert time.monotonic() - began >= 0.4, "the first contact did not wait for its turn"
    await wait_until_async(lambda: rig.worker.polls_counted >= 2, timeout=20)
    # Hold the event loop across a due time: the poll is served late, and its lag says so.
    lags = len(rig.worker.poll_lags)
    time.sleep(1.6)  # noqa: ASYNC251 - blocks the loop on purpose: the timer cannot fire
    await wait_until_async(lambda: len(rig.worker.poll_lags) > lags, timeout=20)
    late = rig.worker.poll_lags[lags]
    assert late >= 0.5, f"lag {late:.3f} s: measured from when the timer ran, not from the due time"
    # The polls missed while the loop was held are one poll, not a burst.
    await asyncio.sleep(0.3)
    assert len(rig.worker.poll_lags) <= lags + 2
