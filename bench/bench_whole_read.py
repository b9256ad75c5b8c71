"""whole_read: the periodic whole read of a terminal's log when it holds nothing new.

A polled terminal's log is read whole at least every `full_read_every` (an hour by default),
whatever its count says: at 5,000 terminals of a few thousand records that is 1.4 whole reads
a second, a cost the 120 s window of `fleet_scale` hardly sees. This measures one such read:
the gateway's own path (the driver hands the log over part by part, `LogIntake` recognises
the stored prefix by its bytes and stores nothing) against the same driver's plain read of the
same log (`read_records`: every record decoded), in turns, in one process, with the emulated
terminal in a child process on the other CPU. CPU is this process's (the driver's pool
threads included), per read; each run is READS reads of each kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure, LoadWindow
from punchgate.drivers.base import record_chunks
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.gateway.worker_known_log import KnownLog, LogIntake

RUNS = 3
READS = 20
SEED = "1\x1fbench\x1fzk\x1f"
TERMINALS_AT_SCALE = 5000
FULL_READ_EVERY = 3600.0  # the default `full_read_every`


async def _gateway_read(driver: ZkDriver, known: KnownLog | None) -> LogIntake:
    """The worker's whole read (`_read_and_commit`) without the commit: nothing is new."""
    intake = LogIntake(known, SEED)
    async with contextlib.aclosing(record_chunks(driver)) as chunks:
        async for part in chunks:
            intake.committed(intake.take(part))
    intake.committed(intake.finish())
    return intake


async def _measure(port: int, records: int) -> tuple[list[float], list[float]]:
    """RUNS runs of READS reads each, gateway then plain (ms of CPU per read)."""
    config = ZkTerminal.model_validate(
        {"name": "t", "type": "zk", "host": "127.0.0.1", "port": port, "timeout": 30, "live": False}
    )
    driver = ZkDriver(config)
    await driver.connect()
    try:
        known = (await _gateway_read(driver, None)).known()  # the first read stores the log
        gateway: list[float] = []
        plain: list[float] = []
        for _ in range(RUNS):
            started = time.process_time()
            for _ in range(READS):
                intake = await _gateway_read(driver, known)
                if intake.skipped != records or intake.stored != records:
                    raise RuntimeError(f"the log was not recognised: {intake.skipped} of {records} skipped")
            gateway.append((time.process_time() - started) / READS * 1000)
            started = time.process_time()
            for _ in range(READS):
                if len(await driver.read_records()) != records:
                    raise RuntimeError("the plain read did not return the whole log")
            plain.append((time.process_time() - started) / READS * 1000)
        return gateway, plain
    finally:
        await driver.close()


def run(workdir: Path, *, quick: bool) -> BenchResult:
    sizes = (3000,) if quick else (3000, 30_000)
    result = BenchResult(
        name="whole_read",
        title="whole read of a log that holds nothing new: "
        + " and ".join(f"{s:,}" for s in sizes)
        + " records, CPU per read",
        command="python -m bench --only whole_read" + (" --quick" if quick else ""),
        quick=quick,
    )
    for records in sizes:
        with LoadWindow() as load, contextlib.ExitStack() as cleanup:
            host = EmulatorHost(workdir, count=1, records=records).start()
            cleanup.callback(host.stop)
            if len(os.sched_getaffinity(0)) > 1:
                host.pin({1})
                cleanup.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
                os.sched_setaffinity(0, {0})
            gateway, plain = asyncio.run(_measure(host.ports[0], records))
        result.add(
            Figure.of_runs(
                f"{records:,} records: the gateway's whole read, nothing new (CPU per read)",
                gateway,
                "ms",
                versus="the same driver's plain read, every record decoded",
                versus_runs=plain,
                load=load,
            )
        )
        per_second = TERMINALS_AT_SCALE / FULL_READ_EVERY
        median = sorted(gateway)[len(gateway) // 2]
        result.note(
            f"{records:,} records (TFT, 40-byte records, over TCP): at {TERMINALS_AT_SCALE:,} terminals "
            f"read whole every {FULL_READ_EVERY:.0f} s ({per_second:.2f} reads a second), "
            f"{per_second * median / 10:.1f} % of a core on average"
        )
    return result
