"""The poll-cost rig: a device worker against the ZK emulator over real loopback TCP, with a real
buffer file, counting whole-log reads, buffer writes and normalised records (`rig_factory`).
Used by tests/gateway/test_poll_cost.py and test_tail_read.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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

SERIAL = "POLLCOST0001"


class CountingDriver(ZkDriver):
    """The real driver, counting whole-log reads."""

    reads = 0

    async def read_records(self, progress: Callable[[int, int], None] | None = None) -> list[RawPunch]:
        self.reads += 1
        return await super().read_records(progress)

    def read_record_chunks(self) -> AsyncGenerator[Sequence[RawPunch], None]:
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
        before = self.worker.polls_counted + self.worker.full_reads + self.worker.tail_reads
        self.worker.request_poll()
        await wait_until_async(
            lambda: self.worker.polls_counted + self.worker.full_reads + self.worker.tail_reads > before,
            timeout=20,
            message="a poll",
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
                lambda: rig.worker.full_reads + rig.worker.polls_counted + rig.worker.tail_reads >= 1,
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


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket listening as systemd's notify socket would, and its path."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()
