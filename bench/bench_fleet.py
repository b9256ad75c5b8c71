"""fleet: 500 terminals polled every 30 s, start-up included: gateway CPU, peak memory, poll lag.

The emulated terminals (TCP) run in a child process of their own, so the gateway's CPU figure
is its own. Each holds a realistic log (2,000 records; `--quick`: 100 terminals of 1,000) that
keeps growing: people punch at random terminals, one punch a minute per terminal on average.
The gateway is the real daemon (`punchgate run`), live mode off (pure polling), a broker
attached, a fresh buffer each run, so every run starts with every terminal's first read.

Each run's window starts when the daemon is launched (start-up, first reads and all): CPU % is
the daemon's user+system time from /proc over the window's wall time (100 % = one core); peak
RSS is the kernel's high-water mark (VmHWM); poll lag is the worker's own figure, logged with
every scheduled poll (`full_read` or `poll_counted`) as `poll_lag`: seconds from the moment
the poll fell due on its timer to the start of its work. Beside each run, over the same
window, the same daemon with no terminals runs as the comparison (its start-up included too).
3 runs; each figure is the median, with the spread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure, LoadWindow
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess, log_events
from tests.support.measure import cpu_seconds, percentile

RUNS = 3
INTERVAL = 30.0
PUNCHES_PER_TERMINAL_MINUTE = 1.0


@dataclass
class FleetRun:
    cpu: float  # % of one core, launch to end of window
    rss: float  # MiB, peak
    idle_cpu: float
    idle_rss: float
    lags: list[float]  # every scheduled poll in the window
    first_interval_lags: list[float]  # those that fell due in the first poll interval
    reads: int
    counted: int
    failures: int
    host_cpu: float  # the emulator process, % of one core


def _polls(log_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return log_events(log_path, "full_read"), log_events(log_path, "poll_counted")


def _one_run(workdir: Path, host: EmulatorHost, broker: Broker, window: float, run: int) -> FleetRun:
    log_path = workdir / f"gateway-fleet-{run}.log"
    config = write_config(
        workdir / f"fleet-{run}.toml",
        gateway_id=f"bench-fleet-{run}",
        broker_port=broker.port,
        buffer_path=workdir / f"fleet-{run}.db",
        terminals=[
            zk_terminal(f"t{n:04d}", port, poll_interval=INTERVAL, live=False)
            for n, port in enumerate(host.ports)
        ],
    )
    idle_config = write_config(
        workdir / f"idle-{run}.toml",
        gateway_id=f"bench-idle-{run}",
        broker_port=broker.port,
        buffer_path=workdir / f"idle-{run}.db",
    )
    with contextlib.ExitStack() as cleanup:
        gateway = GatewayProcess(config, log_path=log_path)
        idle = GatewayProcess(idle_config, log_path=workdir / f"gateway-idle-{run}.log")
        cleanup.callback(gateway.stop)
        cleanup.callback(idle.stop)
        host_cpu0 = cpu_seconds(host.pid)
        launched = time.monotonic()
        gateway.start(ready_timeout=None)  # the clock runs from the launch: start-up is in the window
        idle.start(ready_timeout=None)
        gateway.wait_ready(60)
        idle.wait_ready(60)
        time.sleep(max(0.0, window - (time.monotonic() - launched)))
        wall = time.monotonic() - launched
        cpu = gateway.cpu_seconds() / wall * 100
        idle_cpu = idle.cpu_seconds() / wall * 100
        rss, idle_rss = gateway.peak_rss_mb(), idle.peak_rss_mb()
        host_cpu = (cpu_seconds(host.pid) - host_cpu0) / wall * 100
    reads, counted = _polls(log_path)
    timed = [e for e in reads + counted if "poll_lag" in e]
    lags = [float(e["poll_lag"]) for e in timed]
    # The first poll interval after the launch: the polls whose due time fell in it.
    started = min((_at(e) - float(e["poll_lag"]) for e in timed), default=0.0)
    first = [float(e["poll_lag"]) for e in timed if _at(e) - float(e["poll_lag"]) < started + INTERVAL]
    failures = len(log_events(log_path, "session_failed"))
    for path in workdir.glob(f"*-{run}.db*"):
        path.unlink(missing_ok=True)
    return FleetRun(cpu, rss, idle_cpu, idle_rss, lags, first, len(reads), len(counted), failures, host_cpu)


def _at(event: dict[str, Any]) -> float:
    """An event's wall time (unix seconds) from its ISO timestamp."""
    return dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def run(workdir: Path, *, quick: bool) -> BenchResult:
    terminals, records = (100, 1000) if quick else (500, 2000)
    window = 45.0 if quick else 120.0
    rate = terminals * PUNCHES_PER_TERMINAL_MINUTE / 60
    result = BenchResult(
        name="fleet",
        title=(
            f"fleet: {terminals} terminals of {records:,} growing records, polled every {INTERVAL:.0f} s, "
            f"{window:.0f} s from launch"
        ),
        command="python -m bench --only fleet" + (" --quick" if quick else ""),
        quick=quick,
    )
    runs: list[FleetRun] = []
    with LoadWindow() as load, contextlib.ExitStack() as cleanup:  # every process is stopped
        host = EmulatorHost(workdir, count=terminals, records=records, punch_rate=rate).start()
        cleanup.callback(host.stop)
        broker = Broker(workdir / "broker")
        cleanup.callback(broker.stop)
        broker.start()
        for n in range(RUNS):
            runs.append(_one_run(workdir, host, broker, window, n))
    for n, r in enumerate(runs):
        if not r.lags:
            raise RuntimeError(f"run {n}: no poll lags logged; see {workdir}")
    result.note(
        f"{terminals} terminals × {records:,} records at the start, {rate:.1f} punches/s in all while it runs; "
        "per run: "
        + "; ".join(
            f"{r.reads} full reads, {r.counted} polls answered by the count, {r.failures} failed sessions, "
            f"emulators {r.host_cpu:.0f} % of a core"
            for r in runs
        )
    )
    result.note(
        "poll lag per run (p50 / p99 / max, s): "
        + "; ".join(
            f"{percentile(r.lags, 50):.3f} / {percentile(r.lags, 99):.3f} / {max(r.lags):.3f}" for r in runs
        )
        + "; in the first poll interval after the launch (p99): "
        + ", ".join(f"{percentile(r.first_interval_lags, 99):.3f}" for r in runs if r.first_interval_lags)
    )
    result.add(
        Figure.of_runs(
            "gateway CPU from launch (100 % = one core)",
            [r.cpu for r in runs],
            "%",
            versus="same daemon, no terminals, same window",
            versus_runs=[r.idle_cpu for r in runs],
            goal="≤ 30 %",
            check=lambda value, _ratio: value <= 30,
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            "gateway peak RSS",
            [r.rss for r in runs],
            "MiB",
            versus="same daemon, no terminals",
            versus_runs=[r.idle_rss for r in runs],
            goal="≤ 150 MB",
            check=lambda value, _ratio: value * 1.048576 <= 150,
            load=load,
        )
    )
    result.add(Figure.of_runs("poll lag p50", [percentile(r.lags, 50) for r in runs], "s", load=load))
    result.add(
        Figure.of_runs(
            "poll lag p99 (start-up included)",
            [percentile(r.lags, 99) for r in runs],
            "s",
            goal="≤ 5 s",
            check=lambda value, _ratio: value <= 5.0,
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            "share of polls that read the whole log",
            [100 * r.reads / max(1, r.reads + r.counted) for r in runs],
            "%",
            load=load,
        )
    )
    return result
