"""recovery: 200 terminals buffer through a broker outage; time until central has everything.

200 emulated terminals (their own process) hold 2,010 records each. The gateway (the real
daemon, with the default reconnect settings: `reconnect_max` 60 s, so it backs off while the
broker is away as a site's would) reads them all into its buffer while the broker is down,
until about 400,000 punches are pending. Then the broker starts, and the clock runs until the
central subscriber (a persistent session, so messages queue for it however early the gateway
reconnects) holds every id. That time is split: broker back → the gateway reconnected (its
backoff), and reconnected → the subscriber holds every punch (the drain proper).

The limit probe (bare sqlite3 + aiomqtt, from the drain benchmark) then drains a snapshot of
the same buffer under the same conditions: the same broker (persistent), a persistent
subscriber of the same kind, the clock from the probe's connect until that subscriber holds
every id. The gateway is stopped first, so the two never share the machine.

3 runs; each figure is the median, with the spread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench.bench_drain import _probe_drain
from bench.collector import PunchCollector
from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure, LoadWindow
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.reconcile import pending_count

GATEWAY_ID = "bench-recovery"
RUNS = 3


@dataclass
class Recovery:
    pending: int
    reconnect: float  # broker back → the gateway connected
    drain: float  # the gateway connected → the subscriber holds every punch
    probe: float  # the probe connected → its subscriber holds every punch
    connects: int


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a buffer another process has open (SQLite's online backup)."""
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def _central(broker: Broker, client_id: str) -> PunchCollector:
    """A persistent subscriber, registered while the broker is up (its session then queues)."""
    PunchCollector(broker.port, GATEWAY_ID, persistent=True, client_id=client_id).start().stop()
    return PunchCollector(broker.port, GATEWAY_ID, persistent=True, client_id=client_id)


def _probe(workdir: Path, broker: Broker, snapshot: Path, pending: int, run: int) -> float:
    collector = _central(broker, f"recovery-probe-{run}").start()
    try:
        started = time.monotonic()
        asyncio.run(_probe_drain(snapshot, broker.port, gateway_id=GATEWAY_ID))
        if not collector.wait_unique(pending, 300):
            raise RuntimeError(f"the probe's subscriber holds {collector.unique:,} of {pending:,}")
        return time.monotonic() - started
    finally:
        collector.stop()


def _one_run(workdir: Path, host: EmulatorHost, terminals: int, run: int) -> Recovery:
    with contextlib.ExitStack() as cleanup:
        broker = Broker(workdir / f"broker-{run}", persistent=True)
        cleanup.callback(broker.stop)
        broker.start()
        collector = _central(broker, f"recovery-central-{run}")
        broker.stop()
        buffer = workdir / f"recovery-{run}.db"
        config = write_config(
            workdir / f"recovery-{run}.toml",
            gateway_id=GATEWAY_ID,
            broker_port=broker.port,
            buffer_path=buffer,
            terminals=[
                zk_terminal(f"t{n:03d}", port, poll_interval=3600, live=False, timeout=60)
                for n, port in enumerate(host.ports)
            ],
        )
        gateway = GatewayProcess(config, log_path=workdir / f"gateway-recovery-{run}.log")
        cleanup.callback(gateway.stop)
        gateway.start()
        gateway.wait_until(
            lambda: len(gateway.events("full_read")) >= terminals,
            timeout=900,
            interval=1.0,
            message="a full read of every terminal",
        )
        pending = pending_count(buffer)
        snapshot = workdir / f"probe-{run}.db"
        _snapshot(buffer, snapshot)
        broker.start()
        back, back_wall = time.monotonic(), time.time()
        collector.start()
        cleanup.callback(collector.stop)
        if not collector.wait_unique(pending, 600):
            raise RuntimeError(f"the subscriber holds {collector.unique:,} of {pending:,} after 10 minutes")
        total = time.monotonic() - back
        connected = gateway.events("mqtt_connected")
        if not connected:
            raise RuntimeError("the gateway never logged mqtt_connected")
        at = dt.datetime.fromisoformat(connected[-1]["timestamp"].replace("Z", "+00:00")).timestamp()
        reconnect = max(0.0, at - back_wall)
        gateway.stop()
        collector.stop()
        probe = _probe(workdir, broker, snapshot, pending, run)
        return Recovery(pending, reconnect, total - reconnect, probe, len(connected))


def run(workdir: Path, *, quick: bool) -> BenchResult:
    terminals, per_terminal = (40, 1010) if quick else (200, 2010)
    result = BenchResult(
        name="recovery",
        title=(
            f"recovery: {terminals} terminals, about {terminals * per_terminal // 1000 * 1000:,} punches "
            "pending through a broker outage"
        ),
        command="python -m bench --only recovery" + (" --quick" if quick else ""),
        quick=quick,
    )
    runs: list[Recovery] = []
    with LoadWindow() as load, contextlib.ExitStack() as cleanup:
        host = EmulatorHost(workdir, count=terminals, records=per_terminal, users=1000).start()
        cleanup.callback(host.stop)
        for n in range(RUNS):
            runs.append(_one_run(workdir, host, terminals, n))
            for path in workdir.glob(f"*-{n}.db*"):
                path.unlink(missing_ok=True)
    pending = runs[0].pending
    result.note(
        f"{pending:,} punches pending ({terminals} × {per_terminal:,} records; exact repeats in the generated "
        f"logs are one punch), read with the broker down; default reconnect settings (reconnect_min 1 s, "
        f"reconnect_max 60 s); connects per run: {', '.join(str(r.connects) for r in runs)}"
    )
    result.note(
        "per run (broker back → reconnected + reconnected → subscriber holds all; probe): "
        + "; ".join(f"{r.reconnect:.1f} + {r.drain:.1f} s; {r.probe:.1f} s" for r in runs)
    )
    result.add(
        Figure.of_runs(
            "broker back → gateway reconnected (its backoff)",
            [r.reconnect for r in runs],
            "s",
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            "gateway reconnected → subscriber holds every punch",
            [r.drain for r in runs],
            "s",
            versus="limit probe on the same snapshot, same broker and subscriber",
            versus_runs=[r.probe for r in runs],
            goal="≤ 10 s",
            check=lambda value, _ratio: value <= 10,
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            "broker back → subscriber holds every punch (both)",
            [r.reconnect + r.drain for r in runs],
            "s",
            load=load,
        )
    )
    return result
