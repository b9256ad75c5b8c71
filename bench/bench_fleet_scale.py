"""fleet_scale: issue 18's fleet, 5,000 terminals polled every 30 s after a restart, start-up included.

Each emulated ZK terminal (TCP, all in a child process pinned to CPU 1) holds a realistic log,
3,000 records over 30 days, and it grows at a shift change's rate, 4 punches a minute (333
punches a second at 5,000 terminals). A daemon of its own first reads every log into a buffer
(15 million punches at 5,000 terminals: most of an hour, not measured), and each terminal's last
whole read is then dated as in a gateway long in service, spread over the last hour
(`spread_whole_reads`): the hourly whole reads come due at their steady rate in every window,
not all within the hour after the fill. Each run then launches
the real daemon (`punchgate run`, pinned to CPU 0 beside the idle daemon) on that buffer: the
restart of a gateway whose terminals' logs are already stored, its first poll interval included
in the window. Each later run starts from the buffer the run before it stopped (a restart, as
after an upgrade), so every run is the same few seconds behind its terminals; the note gives
each run's downtime and what its first poll interval read.

Figures per run, medians of 3 with their spread: CPU from launch and over the last 30 s (100 %
= one core), peak RSS (VmHWM), poll lag p99 from the due time over the window and over the
first poll interval; the idle daemon (no terminals) beside each, over the same window.
`--quick`: 1,000 terminals, 90 s windows. A 120 s window holds about 170 of the hourly whole
reads (`full_read_every`) at 5,000 terminals; their average cost is also measured apart
(`whole_read`, docs/performance.md).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bench.bench_fleet import EMULATOR_CPUS, INTERVAL, FleetRun, _one_run, cpu_rss_figures, fill_once
from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure, LoadWindow
from tests.support.broker import Broker
from tests.support.measure import percentile

RUNS = 3
RECORDS = 3000
PER_MINUTE = 4.0


def run(workdir: Path, *, quick: bool) -> BenchResult:
    terminals, window = (1000, 90.0) if quick else (5000, 120.0)
    rate = terminals * PER_MINUTE / 60
    result = BenchResult(
        name="fleet_scale",
        title=(
            f"fleet at scale: {terminals:,} terminals of {RECORDS:,} growing records (4 punches/min each), "
            f"restarted, polled every {INTERVAL:.0f} s, {window:.0f} s from launch"
        ),
        command="python -m bench --only fleet_scale" + (" --quick" if quick else ""),
        quick=quick,
    )
    runs: list[FleetRun] = []
    with contextlib.ExitStack() as cleanup:
        host = EmulatorHost(workdir, count=terminals, records=RECORDS, punch_rate=rate).start(900)
        cleanup.callback(host.stop)
        host.pin(EMULATOR_CPUS)
        broker = Broker(workdir / "broker")
        cleanup.callback(broker.stop)
        broker.start()
        filled = fill_once(workdir, host, broker)  # set-up, before the load window
        with LoadWindow() as load:
            for n in range(RUNS):
                runs.append(_one_run(workdir, host, broker, window, n, pin=True, filled=filled))
                print(f"  run {n}: {_line(runs[-1])}", flush=True)
    for n, r in enumerate(runs):
        if not r.lags:
            raise RuntimeError(f"run {n}: no poll lags logged; see {workdir}")
    result.note(
        f"{terminals:,} terminals × {RECORDS:,} records, {rate:.0f} punches/s in all; daemons on CPU 0, "
        "emulators on CPU 1; per run: "
        + "; ".join(
            f"down {r.downtime:.0f} s before the launch, {r.first_interval_read:,} records read by the first "
            f"interval's tail reads, {r.tails} tail reads, {r.counted} polls answered by the count, {r.reads} whole reads, "
            f"{r.failures} failed sessions, emulators {r.host_cpu:.0f} % of a core, exit {r.stop_seconds:.1f} s"
            for r in runs
        )
    )
    cpu_rss_figures(result, runs, load, cpu_goal=50, rss_goal_mb=200)
    result.add(
        Figure.of_runs(
            f"gateway CPU over the window's last {INTERVAL:.0f} s",
            [r.last_interval_cpu for r in runs],
            "%",
            load=load,
        )
    )
    for label, values in (
        ("poll lag p99 from the due time (start-up included)", [percentile(r.lags, 99) for r in runs]),
        ("poll lag p99, first poll interval", [percentile(r.first_interval_lags, 99) for r in runs]),
    ):
        result.add(Figure.of_runs(label, values, "s", goal="≤ 5 s", check=lambda v, _r: v <= 5.0, load=load))
    return result


def _line(r: FleetRun) -> str:
    return (
        f"CPU {r.cpu:.1f} % (last 30 s {r.last_interval_cpu:.1f} %, idle {r.idle_cpu:.1f} %), "
        f"RSS {r.rss:.0f} MiB (idle {r.idle_rss:.0f}), lag p99 {percentile(r.lags, 99):.2f} s"
    )
