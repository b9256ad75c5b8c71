"""Chaos in central delivery: terminals keep punching while the broker (no persistence), the
gateway, the sink and PostgreSQL are killed and restarted at random; in the end every punch the
terminals produced must be in PostgreSQL exactly once, and confirmed at the gateway.

The broker runs without persistence on purpose: a SIGKILL loses every message it acknowledged
and had not delivered yet, and the sink's session with them. Only the gateways' re-sends of
what no sink confirmed can bring those punches back, which is what central delivery is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.postgres import Postgres
from tests.support.sink import SinkProcess
from tests.support.zk import expected_ids

TERMINALS = 2
PUNCHES_PER_SECOND = 10.0


@dataclass
class ChaosReport:
    produced: int = 0
    stored: int = 0
    missing: int = 0
    duplicates: int = 0
    resent: int = 0  # punches the gateway sent again for want of a confirmation
    faults: Counter[str] = field(default_factory=Counter)
    drain_seconds: float = 0.0

    def lines(self) -> list[str]:
        injected = ", ".join(f"{n} {what}" for what, n in sorted(self.faults.items()))
        return [
            f"produced {self.produced} punches; stored in PostgreSQL {self.stored}; missing {self.missing}; "
            f"duplicate rows {self.duplicates}",
            f"faults injected: {injected}",
            f"punches re-sent by the gateway: {self.resent}; all confirmed {self.drain_seconds:.0f} s after the last fault",
        ]


def _pg_ids(url: str) -> list[str]:
    with (
        contextlib.suppress(psycopg.OperationalError, psycopg.errors.UndefinedTable),
        psycopg.connect(url) as conn,
    ):
        return [row[0] for row in conn.execute("SELECT id FROM punches")]
    return []


def _unconfirmed(buffer: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM punches WHERE delivered_at IS NULL").fetchone()[0])


async def _produce(emulators: list[ZkEmulator], stop: asyncio.Event) -> None:
    start = dt.datetime.now().replace(microsecond=0) - dt.timedelta(hours=3)
    n = 0
    while not stop.is_set():
        emulator = emulators[n % len(emulators)]
        emulator.add_punch("42", when=start + dt.timedelta(seconds=n), state=n % 2, verify=1)
        n += 1
        await asyncio.sleep(1 / PUNCHES_PER_SECOND)


async def run_chaos(
    gateway_factory: Callable[..., GatewayProcess],
    sink_factory: Callable[..., SinkProcess],
    broker: Broker,
    postgres: Any,
    pg_url: str,
    tmp_path: Path,
    *,
    minutes: float,
    seed: int = 7,
) -> ChaosReport:
    assert isinstance(postgres, Postgres)
    rng = random.Random(seed)
    report = ChaosReport()
    emulators = [ZkEmulator(serial_number=f"SN-CHAOS-{n}", transports=("tcp",)) for n in range(TERMINALS)]
    for n, emulator in enumerate(emulators):
        emulator.generate_log(records=500, days=2, users=20, seed=n)
        emulator.add_user("42")
        await emulator.start()
    sink = sink_factory(pg_url).start()
    gateway = gateway_factory(
        [
            zk_terminal(f"door-{n}", e, poll_interval=1, live=False, timeout=5)
            for n, e in enumerate(emulators)
        ],
        mqtt={"delivery": "central", "resend_after": 5, "batch_size": 100, "reconnect_max": 2.0},
    )
    stop = asyncio.Event()
    producer = asyncio.create_task(_produce(emulators, stop))
    try:
        await gateway.wait_until_async(sink.connected, timeout=60, message=sink.output)
        gateway.start()
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(4, 10))
            fault = rng.choice(["broker", "gateway", "sink", "postgres"])
            report.faults[fault] += 1
            if fault == "broker":
                broker.kill()  # no persistence: whatever it held is gone
                await asyncio.sleep(rng.uniform(0.5, 3))
                broker.start()
            elif fault == "gateway":
                await asyncio.to_thread(gateway.kill)
                await asyncio.sleep(rng.uniform(0.5, 2))
                await asyncio.to_thread(gateway.start)
            elif fault == "sink":
                sink.kill()
                await asyncio.sleep(rng.uniform(0.5, 3))
                sink.start()
            else:
                await asyncio.to_thread(postgres.kill)
                await asyncio.sleep(rng.uniform(0.5, 3))
                await asyncio.to_thread(postgres.start)
        stop.set()
        await producer
        everything = {i for e in emulators for i in expected_ids(e)}
        report.produced = len(everything)
        calm = time.monotonic()
        buffer = tmp_path / "buffer.db"
        await gateway.wait_until_async(
            lambda: set(_pg_ids(pg_url)) >= everything and _unconfirmed(buffer) == 0,
            timeout=300,
            message=lambda: f"{len(everything - set(_pg_ids(pg_url)))} punches not in PostgreSQL yet",
        )
        report.drain_seconds = time.monotonic() - calm
        ids = _pg_ids(pg_url)
        report.stored = len(set(ids))
        report.duplicates = len(ids) - len(set(ids))
        report.missing = len(everything - set(ids))
        report.resent = sum(int(e.get("punches", 0)) for e in gateway.events("central_resend"))
        for line in report.lines():
            print(line)
        return report
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await producer
        for emulator in emulators:
            await emulator.stop()
