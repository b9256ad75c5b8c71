"""fleet: 500 terminals polled every 30 s, start-up included: a first start, then a restart.

The emulated terminals (TCP) run in a child process of their own, so the gateway's CPU figure
is its own. Each holds a realistic log (2,000 records; `--quick`: 100 terminals of 1,000) that
keeps growing: people punch at random terminals, one punch a minute per terminal on average.
The gateway is the real daemon (`punchgate run`), live mode off (pure polling), a broker
attached. Each of the 3 runs has two windows, each from a daemon's launch (start-up included):

- **a first start**, on an empty buffer: every terminal's whole log is imported (a million
  records at full size). Its figures are what the import took (until every terminal was read,
  records a second, CPU), the peak memory (the same ≤ 150 MB goal), how long terminals waited
  for their first read, and the poll lag of the terminals already read meanwhile (≤ 5 s: the
  import must not hold up the polls of terminals it is done with). No CPU goal: a million
  records cost what they cost once, and the goals below are for a gateway in service. Its
  daemon runs on past the window until every terminal has been read (at most 600 s from the
  launch), so the peak memory and the lags cover the whole import; its CPU from launch is over
  the window, as the restart's.
- **a restart** of the gateway the first start stopped, on its buffer, each terminal's last
  whole read dated as in a gateway long in service (`spread_whole_reads`): the fleet goals,
  ≤ 30 % of a core from launch, ≤ 150 MB, poll lag p99 ≤ 5 s, the first poll interval
  included (as issue 18 states them for its 5,000 terminals, `fleet_scale`).

CPU % is the daemon's user+system time from /proc over the window's wall time (100 % = one
core); peak RSS is the kernel's high-water mark (VmHWM); poll lag is the worker's own figure,
logged with every scheduled poll (`full_read`, `tail_read` or `poll_counted`) as `poll_lag`:
seconds from the moment the poll fell due on its timer to the start of its work. Beside each
window, the same daemon with no terminals runs as the comparison (its start-up included too).
Each figure is the median of the 3 runs, with the spread.

Issue 18's 5,000-terminal restart is recorded by `bench/bench_fleet_scale.py` (`--only
fleet_scale`). Other sizes and rates, one run each, printed rather than recorded:

    python -m bench.bench_fleet --terminals 5000 --records 3000 --per-minute 4 --restart --pin

`--restart` first lets a daemon read every terminal into the buffer, stops it, and measures a
second daemon launched on that buffer (the first poll interval after a restart: every log is
already stored). `--per-minute` is each terminal's punch rate; `--pin` keeps the emulators on
CPU 1 and both daemons on CPU 0 (os.sched_setaffinity). See `scale_main`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.emulator_host import EmulatorHost
from bench.results import BenchResult, Figure, LoadWindow
from punchgate.drivers.config import TerminalConfig
from punchgate.gateway.worker_known_log import KNOWN_LOG_KEY
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.broker import Broker, free_port
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess, log_events
from tests.support.measure import cpu_seconds, peak_rss_mb, percentile

RUNS = 3
INTERVAL = 30.0
PUNCHES_PER_TERMINAL_MINUTE = 1.0
GATEWAY_CPUS = {0}  # --pin: both daemons here, the emulators on the other core
EMULATOR_CPUS = {1}
STOP_TIMEOUT = 120.0  # a daemon with thousands of sessions to close
IMPORT_TIMEOUT = 600.0  # a first start's import, from the launch
FILLED_ID = "bench-fleet-filled"  # the owner of a buffer filled once for several runs
FULL_READ_EVERY = TerminalConfig.model_fields["full_read_every"].default  # the terminals' (their default)


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
    stop_seconds: float = 0.0  # SIGTERM to exit
    last_interval_cpu: float = 0.0  # % of one core over the window's last poll interval
    tails: int = 0  # polls that read only what the log added
    downtime: float = 0.0  # `filled` runs: seconds from the buffer's last write to the launch
    first_interval_read: int = 0  # records the tail reads of the first poll interval fetched
    imports: FirstReads | None = None  # each terminal's first read in the window


@dataclass
class FirstReads:
    """What a window's first reads (each terminal's first whole read since the launch) did: on
    a first start, the import of every terminal's log."""

    lags: list[float]  # each first read's poll lag: how long its terminal waited for it
    later_lags: list[float]  # the lags of every other poll: terminals already read
    records: int  # records the first reads held
    seconds: float  # launch to the last first read's end; inf when a terminal was not read
    cpu: float  # % of one core from the launch to the last first read's end


def first_reads(
    reads: list[dict[str, Any]],
    timed: list[dict[str, Any]],
    terminals: int,
    launched: float,
    cpu_at: CpuClock,
) -> FirstReads:
    """Split the window's polls into each terminal's first whole read and the rest."""
    first: dict[str, dict[str, Any]] = {}
    for event in reads:
        first.setdefault(str(event.get("device")), event)
    firsts = {id(e) for e in first.values()}
    ended = max((_at(e) for e in first.values()), default=launched)
    seconds = ended - launched if len(first) >= terminals else math.inf
    return FirstReads(
        lags=[float(e.get("poll_lag", 0.0)) for e in first.values()],
        later_lags=[float(e["poll_lag"]) for e in timed if id(e) not in firsts],
        records=sum(int(e.get("records", 0)) for e in first.values()),
        seconds=seconds,
        cpu=cpu_at.share(ended) if math.isfinite(seconds) else math.nan,
    )


class CpuClock:
    """A process's CPU time sampled against the wall clock while a window runs, to tell the
    CPU share up to a moment found only afterwards (when the last first read ended)."""

    def __init__(self, pid: int, launched: float) -> None:
        self.pid, self.launched = pid, launched
        self.samples: list[tuple[float, float]] = [(launched, 0.0)]

    def sleep_until(self, wall: float, step: float = 1.0) -> None:
        while (now := time.time()) < wall:
            time.sleep(min(step, wall - now))
            self.samples.append((time.time(), cpu_seconds(self.pid)))

    def elapsed(self) -> float:
        return time.time() - self.launched

    def share(self, wall: float) -> float:
        """% of one core from the launch to `wall` (the first sample at or after it)."""
        at, used = next(((t, c) for t, c in self.samples if t >= wall), self.samples[-1])
        return used / max(1e-9, at - self.launched) * 100


def _polls(log_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Whole-log reads, polls answered by the count, and tail reads (only what the log added)."""
    return (
        log_events(log_path, "full_read"),
        log_events(log_path, "poll_counted"),
        log_events(log_path, "tail_read"),
    )


def _one_run(
    workdir: Path,
    host: EmulatorHost,
    broker: Broker,
    window: float,
    run: int | str,
    *,
    restart: bool = False,
    pin: bool = False,
    profile: Path | None = None,
    full_read_every: float | None = None,
    filled: Path | None = None,
    leave: Path | None = None,
    http: bool = False,
) -> FleetRun:
    """One window from the daemon's launch, beside the idle daemon. `restart`: the buffer is
    first filled by a daemon of its own, which is then stopped (see `_fill`); or, `filled`, a
    buffer filled so earlier (`fill_once`), which the run takes over and whose place the run's
    stopped buffer then takes: each run is the restart of the gateway the run before stopped, so every run starts
    the same few seconds behind its terminals (were every run to start from the fill, each
    would start further behind than the one before, by however long the runs before it took).
    `leave`: a first start: the daemon runs on past the window until every terminal's log
    is imported (`imports`), and its stopped buffer is moved there, for a restart on it.
    `full_read_every`: the terminals' setting (default: theirs). `http`: the HTTP API on, as a
    site's default configuration has it (the benchmarks' configs have it off), not scraped."""
    options: dict[str, Any] = {} if full_read_every is None else {"full_read_every": full_read_every}
    log_path = workdir / f"gateway-fleet-{run}.log"
    config = write_config(
        workdir / f"fleet-{run}.toml",
        gateway_id=FILLED_ID if filled is not None or leave is not None else f"bench-fleet-{run}",
        broker_port=broker.port,
        buffer_path=workdir / f"fleet-{run}.db",
        http_port=free_port() if http else None,
        terminals=[
            zk_terminal(f"t{n:04d}", port, poll_interval=INTERVAL, live=False, **options)
            for n, port in enumerate(host.ports)
        ],
    )
    idle_config = write_config(
        workdir / f"idle-{run}.toml",
        gateway_id=f"bench-idle-{run}",
        broker_port=broker.port,
        buffer_path=workdir / f"idle-{run}.db",
    )
    if filled is not None:
        _move_buffer(filled, workdir / f"fleet-{run}.db")
    elif restart:
        _fill(config, workdir / f"gateway-fill-{run}.log", len(host.ports))
    stop_seconds = 0.0
    with contextlib.ExitStack() as cleanup:
        gateway = GatewayProcess(config, log_path=log_path)
        idle = GatewayProcess(idle_config, log_path=workdir / f"gateway-idle-{run}.log")
        cleanup.callback(gateway.stop, timeout=STOP_TIMEOUT)
        cleanup.callback(idle.stop)
        host_cpu0 = cpu_seconds(host.pid)
        launched, launched_at = time.monotonic(), time.time()
        downtime = time.time() - _last_written(workdir / f"fleet-{run}.db") if filled is not None else 0.0
        with _spied(workdir, profile, window + 60) if profile else contextlib.nullcontext():
            gateway.start(ready_timeout=None)  # the clock runs from the launch: start-up is in the window
        idle.start(ready_timeout=None)
        daemon = _daemon_pid(gateway.pid) if profile else gateway.pid  # under py-spy: its child
        if pin:
            os.sched_setaffinity(daemon, GATEWAY_CPUS)
            os.sched_setaffinity(idle.pid, GATEWAY_CPUS)
        clock = CpuClock(daemon, launched_at)
        gateway.wait_ready(120)
        idle.wait_ready(120)
        # The window's last poll interval on its own: the steady state, once start-up is over
        # (when it is: the log shows whether first reads still ran).
        clock.sleep_until(launched_at + window - INTERVAL)
        last_cpu0, last_at = cpu_seconds(daemon), time.monotonic()
        clock.sleep_until(launched_at + window)
        wall = time.monotonic() - launched
        cpu = cpu_seconds(daemon) / wall * 100
        last_cpu = (cpu_seconds(daemon) - last_cpu0) / max(1e-9, time.monotonic() - last_at) * 100
        idle_cpu = idle.cpu_seconds() / wall * 100
        rss, idle_rss = peak_rss_mb(daemon), idle.peak_rss_mb()
        host_cpu = (cpu_seconds(host.pid) - host_cpu0) / wall * 100
        if leave is not None:  # a first start: its import's figures need the import's end
            while not _every_terminal_read(log_path, len(host.ports)) and clock.elapsed() < IMPORT_TIMEOUT:
                clock.sleep_until(time.time() + 1.0)
            rss = peak_rss_mb(daemon)  # the high-water mark over the whole import
        stopping = time.monotonic()
        if daemon != gateway.pid:
            os.kill(daemon, signal.SIGTERM)  # py-spy writes its profile once its child is gone
            _wait_gone(daemon, STOP_TIMEOUT)
        try:
            gateway.stop(timeout=STOP_TIMEOUT)
            stop_seconds = time.monotonic() - stopping
        except subprocess.TimeoutExpired:
            gateway.kill()  # the figures stand; the exit time is reported as not reached
            stop_seconds = math.inf
    reads, counted, tails = _polls(log_path)
    timed = [e for e in reads + counted + tails if "poll_lag" in e]
    lags = [float(e["poll_lag"]) for e in timed]
    # The first poll interval after the launch: the polls whose due time fell in it.
    started = min((_at(e) - float(e["poll_lag"]) for e in timed), default=0.0)
    first = [float(e["poll_lag"]) for e in timed if _at(e) - float(e["poll_lag"]) < started + INTERVAL]
    first_read = sum(
        int(e.get("read", 0)) for e in tails if _at(e) - float(e.get("poll_lag", 0)) < started + INTERVAL
    )
    failures = len(log_events(log_path, "session_failed"))
    imports = first_reads(reads, timed, len(host.ports), launched_at, clock) if leave is not None else None
    if (kept := filled or leave) is not None:  # the next run restarts the gateway this one stopped
        _move_buffer(workdir / f"fleet-{run}.db", kept)
    for path in workdir.glob(f"*-{run}.db*"):
        path.unlink(missing_ok=True)
    return FleetRun(
        cpu,
        rss,
        idle_cpu,
        idle_rss,
        lags,
        first,
        len(reads),
        len(counted),
        failures,
        host_cpu,
        stop_seconds,
        last_cpu,
        len(tails),
        downtime,
        first_read,
        imports,
    )


def _every_terminal_read(log_path: Path, terminals: int) -> bool:
    """Whether the daemon's log shows a whole read of each of its `terminals`."""
    return len({e.get("device") for e in log_events(log_path, "full_read")}) >= terminals


def _move_buffer(source: Path, target: Path) -> None:
    """A stopped gateway's buffer (the file, its WAL and identity) renamed to `target`'s name,
    modification times kept (`_last_written`); `target`'s old files go first. Renamed, not
    copied: a fleet's buffer of logs of thousands of records is gigabytes, and copying it
    would add its minutes to the downtime the next run's restart must catch up."""
    for old in target.parent.glob(f"{target.name}*"):
        old.unlink()
    for path in source.parent.glob(f"{source.name}*"):
        if path.name.endswith((".lock", "-shm")):
            path.unlink()
        else:
            path.rename(target.parent / path.name.replace(source.name, target.name))


def _last_written(buffer: Path) -> float:
    """When the gateway that left `buffer` last wrote it (unix seconds): about when it stopped."""
    return max(p.stat().st_mtime for p in buffer.parent.glob(f"{buffer.name}*"))


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
            f"fleet: {terminals} terminals of {records:,} growing records, polled every {INTERVAL:.0f} s: "
            f"a first start, then a restart, {window:.0f} s from each launch"
        ),
        command="python -m bench --only fleet" + (" --quick" if quick else ""),
        quick=quick,
    )
    starts: list[FleetRun] = []
    restarts: list[FleetRun] = []
    with LoadWindow() as load, contextlib.ExitStack() as cleanup:  # every process is stopped
        host = EmulatorHost(workdir, count=terminals, records=records, punch_rate=rate).start()
        cleanup.callback(host.stop)
        broker = Broker(workdir / "broker")
        cleanup.callback(broker.stop)
        broker.start()
        for n in range(RUNS):
            left = workdir / f"first-start-{n}.db"
            starts.append(_one_run(workdir, host, broker, window, f"first{n}", leave=left))
            # As in a gateway long in service, not all of them due an hour after this start.
            spread_whole_reads(left, FULL_READ_EVERY)
            restarts.append(_one_run(workdir, host, broker, window, f"restart{n}", filled=left))
            for path in workdir.glob(f"{left.name}*"):
                path.unlink()
    for n, r in enumerate(starts + restarts):
        if not r.lags:
            raise RuntimeError(f"run {n}: no poll lags logged; see {workdir}")
    imports = [r.imports for r in starts if r.imports is not None]  # every start has them
    result.note(
        f"{terminals} terminals × {records:,} records at the start, {rate:.1f} punches/s in all while it runs"
    )
    result.note(
        "first start (an empty buffer: every terminal's log is imported), per run: "
        + "; ".join(_run_line(r) for r in starts)
    )
    result.note(
        "restart (on the buffer the first start left, its terminals' last whole reads dated over the last "
        "hour as in a gateway long in service), per run: " + "; ".join(_run_line(r) for r in restarts)
    )
    _first_start_figures(result, starts, imports, load)
    cpu_rss_figures(result, restarts, load, cpu_goal=30, rss_goal_mb=150, prefix="restart: ")
    result.add(
        Figure.of_runs("restart: poll lag p50", [percentile(r.lags, 50) for r in restarts], "s", load=load)
    )
    for label, values in (
        ("restart: poll lag p99 (start-up included)", [percentile(r.lags, 99) for r in restarts]),
        (
            "restart: poll lag p99, first poll interval",
            [percentile(r.first_interval_lags, 99) for r in restarts],
        ),
    ):
        result.add(Figure.of_runs(label, values, "s", goal="≤ 5 s", check=lambda v, _r: v <= 5.0, load=load))
    result.add(
        Figure.of_runs(
            "restart: share of polls that read the whole log",
            [100 * r.reads / max(1, r.reads + r.counted + r.tails) for r in restarts],
            "%",
            load=load,
        )
    )
    return result


def _first_start_figures(
    result: BenchResult, starts: list[FleetRun], imports: list[FirstReads], load: LoadWindow
) -> None:
    """A first start imports every terminal's whole log: what that import took, and whether the
    polls of the terminals already read kept their time meanwhile. No CPU goal (see the module)."""
    for label, values, unit in (
        ("every terminal's log imported after", [i.seconds for i in imports], "s"),
        (
            "records imported a second (launch to the last first read)",
            [i.records / i.seconds if math.isfinite(i.seconds) else 0.0 for i in imports],
            "records/s",
        ),
        ("gateway CPU until the import ended (100 % = one core)", [i.cpu for i in imports], "%"),
    ):
        result.add(Figure.of_runs(f"first start: {label}", values, unit, load=load))
    cpu_rss_figures(result, starts, load, cpu_goal=None, rss_goal_mb=150, prefix="first start: ")
    result.add(
        Figure.of_runs(
            "first start: a terminal's wait for its first read, p99",
            [percentile(i.lags, 99) for i in imports],
            "s",
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            "first start: poll lag p99 of terminals already read",
            [percentile(i.later_lags, 99) if i.later_lags else 0.0 for i in imports],
            "s",
            goal="≤ 5 s",
            check=lambda value, _ratio: value <= 5.0,
            load=load,
        )
    )


def _run_line(r: FleetRun) -> str:
    return (
        f"{r.reads} whole reads, {r.tails} tail reads, {r.counted} polls answered by the count, "
        f"{r.failures} failed sessions, emulators {r.host_cpu:.0f} % of a core, "
        f"lag p50 / p99 / max {percentile(r.lags, 50):.3f} / {percentile(r.lags, 99):.3f} / {max(r.lags):.3f} s"
    )


def cpu_rss_figures(
    result: BenchResult,
    runs: list[FleetRun],
    load: LoadWindow,
    *,
    cpu_goal: float | None,
    rss_goal_mb: float,
    prefix: str = "",
) -> None:
    """The daemon's CPU from launch and peak RSS, each against the idle daemon beside it."""
    result.add(
        Figure.of_runs(
            f"{prefix}gateway CPU from launch (100 % = one core)",
            [r.cpu for r in runs],
            "%",
            versus="same daemon, no terminals, same window",
            versus_runs=[r.idle_cpu for r in runs],
            goal="" if cpu_goal is None else f"≤ {cpu_goal:g} %",
            check=None if cpu_goal is None else lambda value, _ratio: value <= cpu_goal,
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            f"{prefix}gateway peak RSS",
            [r.rss for r in runs],
            "MiB",
            versus="same daemon, no terminals",
            versus_runs=[r.idle_rss for r in runs],
            goal=f"≤ {rss_goal_mb:g} MB",
            check=lambda value, _ratio: value * 1.048576 <= rss_goal_mb,
            load=load,
        )
    )


# --- the scenario at scale (a command of its own; printed, not recorded) ------------------


def fill_once(workdir: Path, host: EmulatorHost, broker: Broker) -> Path:
    """A buffer filled from every terminal by a daemon of its own (`_fill`), for several runs
    to start from a copy of it: filling 5,000 terminals takes minutes."""
    config = write_config(
        workdir / "fill.toml",
        gateway_id=FILLED_ID,  # the buffer's owner: every run on a copy of it runs as this id
        broker_port=broker.port,
        buffer_path=workdir / "filled.db",
        terminals=[
            zk_terminal(f"t{n:04d}", port, poll_interval=INTERVAL, live=False)
            for n, port in enumerate(host.ports)
        ],
    )
    _fill(config, workdir / "gateway-fill.log", len(host.ports))
    spread_whole_reads(workdir / "filled.db", FULL_READ_EVERY)
    return workdir / "filled.db"


def spread_whole_reads(buffer: Path, every: float) -> None:
    """Date each terminal's last whole read (`known_log.read_at` in its device meta) as a gateway
    long in service has them: spread evenly over the last `every` seconds, in the order the fill
    read them. The fill reads every log within its own tens of minutes, so left as it is, the
    periodic whole reads (`full_read_every`) would all come due within that span an hour on,
    and a window would hold none of them, or twice their steady rate, depending on when it
    starts; spread, every window holds them at their steady rate (terminals / `every`)."""
    store = Store.open(BufferSettings.model_validate({"path": str(buffer)}), gateway_id=FILLED_ID)
    try:
        metas = {name: meta for name, meta in store.all_device_meta().items() if KNOWN_LOG_KEY in meta}
        now = time.time()
        ordered = sorted(metas, key=lambda name: float(metas[name][KNOWN_LOG_KEY]["read_at"]))
        for n, name in enumerate(ordered):
            metas[name][KNOWN_LOG_KEY]["read_at"] = round(now - every * (len(ordered) - n) / len(ordered), 3)
        store.set_device_metas(metas)
    finally:
        store.close()


def _fill(config: Path, log_path: Path, terminals: int, *, timeout: float = 3 * 3600.0) -> None:
    """A daemon of its own reads every terminal once into the buffer, then stops: what a
    restarted daemon finds (its terminals' logs already stored)."""
    filler = GatewayProcess(config, log_path=log_path)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(filler.stop)
        filler.start(ready_timeout=None)  # not pinned: filling is set-up, not measured
        started = time.monotonic()
        while not _every_terminal_read(log_path, terminals):
            if time.monotonic() - started > timeout or not filler.running:
                raise RuntimeError(f"the buffer was not filled in {timeout:.0f} s; see {log_path}")
            time.sleep(2.0)
        print(f"  filled: every terminal read once in {time.monotonic() - started:.0f} s", flush=True)


@contextlib.contextmanager
def _spied(workdir: Path, profile: Path, seconds: float) -> Iterator[None]:
    """Daemons started inside this block run under `py-spy record` (collapsed stacks to
    `profile`): attaching to a running daemon fails on this machine's Python ("failed to find
    python version"), launching it under py-spy works. The daemon is then py-spy's child."""
    wrapper = workdir / "python-under-py-spy"
    spy = Path(sys.executable).with_name("py-spy")
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {spy if spy.exists() else 'py-spy'} record --rate 50 --gil --format raw --output {profile} "
        f'--duration {int(seconds)} -- {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    real, sys.executable = sys.executable, str(wrapper)
    try:
        yield
    finally:
        sys.executable = real


def _daemon_pid(spy: int, timeout: float = 30.0) -> int:
    """The pid of py-spy's child (the daemon)."""
    children = Path(f"/proc/{spy}/task/{spy}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = children.read_text().split() if children.exists() else []
        if pids:
            return int(pids[0])
        time.sleep(0.05)
    raise RuntimeError("py-spy started no daemon")


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _summary(label: str, r: FleetRun) -> str:
    first = f"{percentile(r.first_interval_lags, 99):.2f}" if r.first_interval_lags else "-"
    return (
        f"{label}: CPU {r.cpu:.1f} % (idle daemon {r.idle_cpu:.1f} %; last {INTERVAL:.0f} s "
        f"{r.last_interval_cpu:.1f} %), peak RSS {r.rss:.0f} MiB "
        f"(idle {r.idle_rss:.0f}), poll lag p50 {percentile(r.lags, 50):.2f} s, "
        f"p99 {percentile(r.lags, 99):.2f} s, max {max(r.lags):.2f} s, first interval p99 {first} s "
        f"({len(r.first_interval_lags)} polls); {r.reads} full reads, {r.tails} tail reads, "
        f"{r.counted} count-only polls, "
        f"{r.failures} failed sessions; emulators {r.host_cpu:.0f} % of a core; "
        f"stopped in {r.stop_seconds:.1f} s"
    )


def scale_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fleet", description=__doc__)
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument(
        "--per-minute", type=float, default=4.0, help="punches a minute per terminal (4: a shift change)"
    )
    parser.add_argument("--window", type=float, default=120.0, help="seconds from the launch")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--restart", action="store_true", help="measure a daemon restarted on a filled buffer"
    )
    parser.add_argument("--pin", action="store_true", help="emulators on CPU 1, the daemons on CPU 0")
    parser.add_argument("--profile", type=Path, help="py-spy (collapsed stacks) of the window, to this path")
    parser.add_argument(
        "--full-read-every", type=float, help="the terminals' full_read_every, seconds (default: theirs)"
    )
    parser.add_argument("--keep", type=Path, help="work directory to keep (logs), instead of a temporary one")
    parser.add_argument("--http", action="store_true", help="the HTTP API on (a site's default), not scraped")
    args = parser.parse_args(argv)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="punchgate-fleet-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rate = args.terminals * args.per_minute / 60
    print(
        f"{args.terminals} terminals × {args.records:,} records, {args.per_minute:g} punches/min each "
        f"({rate:.0f}/s in all), polled every {INTERVAL:.0f} s, {args.window:.0f} s from launch, "
        f"{'restart on a filled buffer' if args.restart else 'fresh buffer'}, "
        f"{'pinned' if args.pin else 'not pinned'}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with contextlib.ExitStack() as cleanup:
        started = time.monotonic()
        host = EmulatorHost(workdir, count=args.terminals, records=args.records, punch_rate=rate).start(900)
        cleanup.callback(host.stop)
        if args.pin:
            host.pin(EMULATOR_CPUS)
        print(f"  emulators up in {time.monotonic() - started:.0f} s", flush=True)
        broker = Broker(workdir / "broker")
        cleanup.callback(broker.stop)
        broker.start()
        for n in range(args.runs):
            r = _one_run(
                workdir,
                host,
                broker,
                args.window,
                n,
                restart=args.restart,
                pin=args.pin,
                profile=args.profile,
                full_read_every=args.full_read_every,
                http=args.http,
            )
            print(_summary(f"run {n}", r), flush=True)
    print(f"load after {os.getloadavg()[0]:.1f}; logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(scale_main())
