"""recovery: 200 terminals buffer through a broker outage; time to drain once it is back.

200 emulated terminals (their own process) hold 2,010 records each. The gateway (the real
daemon, `mqtt.reconnect_max = 5` so it retries every few seconds while the broker is away)
reads them all into its buffer while the broker is down, until about 400,000 punches are
pending. Then the broker starts and the clock runs until the buffer has nothing pending
(every punch acknowledged and marked) and until the subscriber (a persistent session, so
messages queue for it from the first second) holds every id. The same run drains a snapshot
of the same buffer with the bare sqlite3 + aiomqtt limit probe from the drain benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from pathlib import Path

from bench.bench_drain import _probe_drain
from bench.collector import PunchCollector
from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.reconcile import pending_count
from tests.support.waiting import wait_for

GATEWAY_ID = "bench-recovery"


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a buffer another process has open (SQLite's online backup)."""
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def run(workdir: Path, *, quick: bool) -> BenchResult:
    terminals, per_terminal = (40, 1010) if quick else (200, 2010)
    result = BenchResult(
        name="recovery",
        title=f"recovery: {terminals} terminals, about {terminals * per_terminal // 1000 * 1000:,} punches pending through a broker outage",
        command="python -m bench --only recovery" + (" --quick" if quick else ""),
        quick=quick,
    )
    with contextlib.ExitStack() as cleanup:  # every process started is stopped, whatever fails
        host = EmulatorHost(workdir, count=terminals, records=per_terminal, users=1000).start()
        cleanup.callback(host.stop)
        broker = Broker(workdir / "broker", persistent=True)
        cleanup.callback(broker.stop)
        # Register the central subscriber's persistent session, then take the broker down.
        broker.start()
        PunchCollector(broker.port, GATEWAY_ID, persistent=True, client_id="recovery-central").start().stop()
        broker.stop()
        buffer = workdir / "recovery.db"
        config = write_config(
            workdir / "recovery.toml",
            gateway_id=GATEWAY_ID,
            broker_port=broker.port,
            buffer_path=buffer,
            terminals=[
                zk_terminal(f"t{n:03d}", port, poll_interval=3600, live=False, timeout=60)
                for n, port in enumerate(host.ports)
            ],
            mqtt={"reconnect_min": 0.5, "reconnect_max": 5.0},
        )
        gateway = GatewayProcess(config, log_path=workdir / "gateway-recovery.log")
        cleanup.callback(gateway.stop)
        collector = PunchCollector(broker.port, GATEWAY_ID, persistent=True, client_id="recovery-central")
        gateway.start()
        began = time.monotonic()
        gateway.wait_until(
            lambda: len(gateway.events("full_read")) >= terminals,
            timeout=900,
            interval=1.0,
            message="a full read of every terminal",
        )
        pending = pending_count(buffer)
        result.note(
            f"{pending:,} punches pending after {time.monotonic() - began:.0f} s of reading with the broker down "
            f"({terminals} × {per_terminal:,} records; exact repeats in the generated logs are one punch)"
        )
        _snapshot(buffer, workdir / "probe.db")
        broker.start()
        back, back_wall = time.monotonic(), time.time()
        collector.start()
        cleanup.callback(collector.stop)
        drained = wait_for(lambda: pending_count(buffer) == 0, timeout=300, interval=0.05)
        drain_s = time.monotonic() - back
        if not drained:
            raise RuntimeError(
                f"still {pending_count(buffer):,} pending 5 minutes after the broker came back"
            )
        connected = gateway.events("mqtt_connected")
        reconnect_s = (
            dt.datetime.fromisoformat(connected[-1]["timestamp"].replace("Z", "+00:00")).timestamp()
            - back_wall
            if connected
            else float("nan")
        )
        collector.wait_unique(pending, 120)
        central_s = time.monotonic() - back
        received = collector.unique
        gateway.stop()
        host.stop()
        probe_s = asyncio.run(_probe_drain(workdir / "probe.db", broker.port))
    result.note(
        f"subscriber held {received:,} of {pending:,} ids {central_s:.1f} s after the broker returned; "
        f"gateway connected {len(connected)} time(s); the limit probe drained the same snapshot in {probe_s:.1f} s"
    )
    result.note(
        f"of the {drain_s:.1f} s, {reconnect_s:.1f} s passed before the gateway reconnected (its backoff, "
        f"reconnect_max = 5 s) and {drain_s - reconnect_s:.1f} s draining"
    )
    if received < pending:
        raise RuntimeError(f"the subscriber received {received:,} of {pending:,}")
    result.add(
        Figure(
            "broker back → buffer drained",
            drain_s,
            "s",
            goal="≤ 10 s",
            met=drain_s <= 10,
            versus="limit probe on the same snapshot",
            versus_value=probe_s,
            ratio=drain_s / probe_s,
        )
    )
    return result
