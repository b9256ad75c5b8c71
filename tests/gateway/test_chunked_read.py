"""A full read is stored part by part while the rest of the log is still on the wire.

Each part is stored in slices of at most FULL_READ_SLICE records (a slice decoded and
normalised at a time, not a whole part). A device worker against the ZK emulator over real
loopback TCP, through a relay the test controls (it can hold the terminal's bytes, or cut the
connection, after so many of them), with a real buffer file. Held mid-transfer, the buffer
already has the first parts' punches and the read has not ended; cut mid-transfer, nothing is
lost: what was stored stays, the next read (after the reconnect) skips exactly that part and
stores the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
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
from punchgate.gateway.worker import FULL_READ_SLICE, DeviceWorker
from punchgate.gateway.worker_failures import Backoff
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.waiting import wait_until_async

SERIAL = "CHUNKED00001"
RECORDS = 6_000  # 40-byte records: four READ_BUFFER chunks of at most 65,472 bytes
FIRST_CHUNK_RECORDS = 65_472 // 40
# The relay acts once this many of the terminal's bytes have passed: two whole chunks and a
# part of the third, so the cut falls inside a transfer.
AFTER_BYTES = 2 * 65_472 + 20_000


class Relay:
    """A TCP relay between the driver and the terminal. On its first connection it holds the
    terminal's bytes (`hold`) or closes both sides (`cut`) after AFTER_BYTES; later
    connections pass everything."""

    def __init__(self, upstream: int, *, cut: bool) -> None:
        self.upstream = upstream
        self.cut = cut
        self.connections = 0
        self.acted = asyncio.Event()  # held or cut, mid-transfer
        self.release = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        tasks = [
            asyncio.ensure_future(self._pump(reader, up_writer, watch=False)),
            asyncio.ensure_future(self._pump(up_reader, writer, watch=first)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool) -> None:
        passed = 0
        while data := await reader.read(4096):
            if watch and passed + len(data) > AFTER_BYTES and not self.acted.is_set():
                writer.write(data[: AFTER_BYTES - passed])
                await writer.drain()
                self.acted.set()
                if self.cut:
                    return  # both sides are closed by _serve
                await self.release.wait()
                data = data[AFTER_BYTES - passed :]
            passed += len(data)
            writer.write(data)
            await writer.drain()


class RecordingStore(Store):
    """The real store, noting each commit's size and the relay connection it came in."""

    relay: Relay
    commits: list[tuple[int, int]]

    def add_punches(self, punches: Any) -> list[str]:
        self.commits.append((self.relay.connections, len(punches)))
        return super().add_punches(punches)


@dataclass
class Rig:
    emulator: ZkEmulator
    relay: Relay
    store: RecordingStore
    worker: DeviceWorker
    sink: Sink
    normalised: list[int] = field(default_factory=lambda: [0])

    def stored(self) -> int:
        return len(self.store.all_ids())

    def terminal_ids(self) -> set[str]:
        return {
            record_id(
                SERIAL, RawPunch(user_id=r.user_id, timestamp=r.timestamp, state=r.state, verify=r.verify)
            )
            for r in self.emulator.records
            if r.timestamp is not None
        }


@pytest.fixture
async def rig_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    cleanup = contextlib.AsyncExitStack()

    async def make(*, cut: bool) -> Rig:
        emulator = ZkEmulator(serial_number=SERIAL, transports=("tcp",), record_capacity=50_000)
        emulator.generate_log(records=RECORDS, days=20, users=50, seed=3)
        await emulator.start()
        cleanup.push_async_callback(emulator.stop)
        assert emulator.tcp_port is not None
        relay = Relay(emulator.tcp_port, cut=cut)
        await relay.start()
        cleanup.push_async_callback(relay.stop)
        config = ZkTerminal.model_validate(
            {
                "name": "door",
                "type": "zk",
                "host": "127.0.0.1",
                "port": relay.port,
                "timeout": 5.0,
                "live": False,
                "poll_interval": 3600,
            }
        )
        store = RecordingStore.open(
            BufferSettings.model_validate({"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0})
        )
        assert isinstance(store, RecordingStore)
        store.relay, store.commits = relay, []
        cleanup.callback(store.close)
        sink = Sink()
        worker = DeviceWorker(
            terminal=config,
            driver=ZkDriver(config),
            store=store,
            sink=sink,
            health=DeviceHealth("door"),
            timezone="UTC",
            driver_type="zk",
            backoff=Backoff(0.2, 0.5),
        )
        rig = Rig(emulator, relay, store, worker, sink)
        real = normalize_punch

        def counted(*args: Any, **kwargs: Any) -> Any:
            rig.normalised[0] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(worker_module, "normalize_punch", counted)
        task = asyncio.create_task(worker.run())

        async def stop_worker() -> None:
            relay.release.set()
            task.cancel()
            async with asyncio.timeout(60):
                await asyncio.gather(task, return_exceptions=True)

        cleanup.push_async_callback(stop_worker)
        return rig

    async with cleanup:
        yield make


class Sink:
    """Counts the forwarder's notices."""

    def __init__(self) -> None:
        self.notices = 0

    def notify_new_punches(self) -> None:
        self.notices += 1


async def test_the_first_parts_are_stored_while_the_rest_is_still_on_the_wire(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(cut=False)
    await wait_until_async(rig.relay.acted.is_set, timeout=30, message="the transfer reaching the hold")
    # The terminal's bytes are held: the read cannot end, yet its first parts are in the buffer.
    await wait_until_async(
        lambda: rig.stored() >= FIRST_CHUNK_RECORDS, timeout=20, message="the first part stored"
    )
    assert rig.worker.full_reads == 0 and rig.stored() < RECORDS
    # The forwarder hears of them once the read ends (publishing meanwhile would slow it).
    assert rig.sink.notices == 0
    rig.relay.release.set()
    await wait_until_async(lambda: rig.worker.full_reads >= 1, timeout=30, message="the read ending")
    assert rig.sink.notices == 1
    assert rig.store.all_ids() == rig.terminal_ids()
    # In slices: a part of 1,636 records is not held decoded and normalised all at once.
    assert len(rig.store.commits) >= RECORDS // FULL_READ_SLICE, rig.store.commits
    assert max(n for _, n in rig.store.commits) <= FULL_READ_SLICE, rig.store.commits
    assert rig.normalised[0] == RECORDS  # each record once


async def test_a_read_cut_mid_transfer_loses_nothing_and_the_next_read_skips_what_it_stored(
    rig_factory: Any,
) -> None:
    rig: Rig = await rig_factory(cut=True)
    # The read after the reconnect goes on from the last record the cut read stored (a tail
    # read, gateway/worker_tail.py).
    await wait_until_async(
        lambda: rig.worker.full_reads + rig.worker.tail_reads >= 1, timeout=60, message="a read after the cut"
    )
    assert rig.relay.acted.is_set() and rig.relay.connections >= 2
    assert rig.sink.notices == 2  # the read that was cut announced what it had stored
    before_cut = sum(n for connection, n in rig.store.commits if connection == 1)
    # Both whole chunks that passed before the cut were stored by the read that was cut.
    assert before_cut >= 2 * FIRST_CHUNK_RECORDS, rig.store.commits
    assert rig.store.all_ids() == rig.terminal_ids()
    # The read after the reconnect recognised the stored part and normalised only the rest.
    assert rig.normalised[0] == RECORDS, (rig.normalised[0], rig.store.commits)
