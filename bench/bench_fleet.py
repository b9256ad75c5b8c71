"""fleet: 500 terminals polled every 30 s for 5 minutes: gateway CPU, peak memory, poll lag.

The 500 emulated terminals (200 records each, TCP) run in a child process of their own, so
the gateway's CPU figure is its own. The gateway is the real daemon (`punchgate run`), live
mode off (pure polling), a broker attached. After a warm-up in which every terminal has had
its first full read, the window starts: CPU % is the daemon's user+system time over the
window's wall time (100 % = one core); peak RSS is the kernel's high-water mark (VmHWM);
poll lag is the worker's own figure (logged as `poll_lag` with each scheduled full read):
seconds from the scheduler firing to the read starting. Goals are absolute, so the same
run also shows the comparison: the idle cost of the same daemon with no terminals.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess, log_events
from tests.support.measure import cpu_seconds, percentile
from tests.support.waiting import wait_for


def _idle_gateway(workdir: Path, broker_port: int, seconds: float) -> tuple[float, float]:
    """CPU % and peak RSS of the daemon with no terminals, over `seconds` after start-up."""
    config = write_config(
        workdir / "idle.toml",
        gateway_id="bench-idle",
        broker_port=broker_port,
        buffer_path=workdir / "idle.db",
    )
    gateway = GatewayProcess(config, log_path=workdir / "gateway-idle.log")
    gateway.start()  # ready: started up, connected or connecting
    try:
        time.sleep(5)  # settle: the start-up's one-off work is not the idle cost
        cpu0, t0 = gateway.cpu_seconds(), time.monotonic()
        time.sleep(seconds)  # the measurement window
        cpu = (gateway.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        return cpu, gateway.peak_rss_mb()
    finally:
        gateway.stop()


def run(workdir: Path, *, quick: bool) -> BenchResult:
    terminals = 100 if quick else 500
    window = 60.0 if quick else 300.0
    interval = 30.0
    result = BenchResult(
        name="fleet",
        title=f"fleet: {terminals} terminals polled every {interval:.0f} s for {window / 60:.0f} min",
        command="python -m bench --only fleet" + (" --quick" if quick else ""),
        quick=quick,
    )
    log_path = workdir / "gateway-fleet.log"
    with contextlib.ExitStack() as cleanup:  # every process started is stopped, whatever fails
        host = EmulatorHost(workdir, count=terminals, records=200).start()
        cleanup.callback(host.stop)
        broker = Broker(workdir / "broker")
        cleanup.callback(broker.stop)
        broker.start()
        idle_cpu, idle_rss = _idle_gateway(workdir, broker.port, 20.0)
        config = write_config(
            workdir / "fleet.toml",
            gateway_id="bench-fleet",
            broker_port=broker.port,
            buffer_path=workdir / "fleet.db",
            terminals=[
                zk_terminal(f"t{n:03d}", port, poll_interval=interval, live=False)
                for n, port in enumerate(host.ports)
            ],
        )
        gateway = GatewayProcess(config, log_path=log_path)
        cleanup.callback(gateway.stop)
        gateway.start()
        warmed = wait_for(lambda: len(gateway.events("full_read")) >= terminals, timeout=180, interval=1.0)
        first_reads = len(gateway.events("full_read"))
        skip = first_reads
        host_cpu0 = cpu_seconds(host.pid)
        cpu0, t0 = gateway.cpu_seconds(), time.monotonic()
        time.sleep(window)  # the measurement window
        wall = time.monotonic() - t0
        cpu = (gateway.cpu_seconds() - cpu0) / wall * 100
        host_cpu = (cpu_seconds(host.pid) - host_cpu0) / wall * 100
        rss = gateway.peak_rss_mb()
    reads = log_events(log_path, "full_read")[skip:]
    lags = [float(r["poll_lag"]) for r in reads if "poll_lag" in r]
    failures = len(log_events(log_path, "session_failed"))
    result.note(
        f"warm-up: {first_reads} first full reads ({'all' if warmed else 'NOT all'} terminals); window {wall:.0f} s: "
        f"{len(reads)} full reads ({len(reads) / wall:.1f}/s), {len(lags)} with a scheduled due time, "
        f"{failures} failed sessions in the whole run; emulator process used {host_cpu:.0f} % of a core"
    )
    if not lags:
        raise RuntimeError(f"no poll lags logged; see {log_path}")
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    result.note(
        f"poll lag: p50 {p50:.3f} s, p99 {p99:.3f} s, max {max(lags):.3f} s, mean {statistics.fmean(lags):.3f} s"
    )
    result.add(
        Figure(
            "gateway CPU (100 % = one core)",
            cpu,
            "%",
            goal="≤ 30 %",
            met=cpu <= 30,
            versus="same daemon idle, no terminals",
            versus_value=idle_cpu,
            ratio=cpu / idle_cpu if idle_cpu > 0 else None,
        )
    )
    result.add(
        Figure(
            "gateway peak RSS",
            rss,
            "MiB",
            goal="≤ 150 MB",
            met=rss * 1.048576 <= 150,
            versus="same daemon idle",
            versus_value=idle_rss,
            ratio=rss / idle_rss,
        )
    )
    result.add(Figure("poll lag p50", p50, "s"))
    result.add(Figure("poll lag p99", p99, "s", goal="≤ 5 s", met=p99 <= 5.0))
    return result
