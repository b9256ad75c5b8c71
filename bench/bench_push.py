"""push: ZK push terminals (ADMS) uploading to the gateway's `[push]` listener.

1. **Backlog.** One emulated push terminal (`ZkPushEmulator`, 500 lines per post, as it
   chunks) uploads a 100,000-record backlog to the real daemon (its own process, a real
   mosquitto attached, a subscriber taking everything it forwards). Timed from the terminal's
   start (handshake) until the last post was answered `OK`: the receiver answers only after
   the fsynced commit, so that is records committed *and* acknowledged. Against it, the probe:
   a bare aiohttp server in its own process that answers the handshake, parses each ATTLOG
   line (PIN, time, status, verify) and appends them to a file, fsync once per request, for
   the same terminal with the same backlog. Runs alternate (probe, gateway, probe, …); the
   medians are compared and every run is listed.
2. **Real time.** N push terminals (emulated in this process, so the punch moment and the
   arrival share one clock) heartbeat at the gateway's default Delay (10 s) and punch at
   random (Poisson, 20/s in total). Latency is from just before `punch()` on the terminal
   to the subscriber's callback for the message holding that id. The gateway's CPU is its
   user+system time from /proc/PID/stat over the punching window, compared with a window
   with the same terminals heartbeating and not punching. Latency's comparison is the broker
   floor: a bare QoS 1 publish through the same broker to the same subscriber.

Full size: 100,000 records, 3 runs each; 200 terminals punching for 60 s (about 4 minutes).
`--quick`: 30,000 records, 3 runs each; 30 terminals for 20 s (under 2 minutes).

`python -m bench --only push [--quick]`; `python -m bench.bench_push --probe PORT FILE` is
the probe server on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from bench.collector import PunchCollector
from bench.results import ROOT, BenchResult, Figure
from punchgate.drivers.zk_push import protocol
from punchgate.drivers.zk_push.emulator import PushRecord, ZkPushEmulator
from tests.support.broker import Broker, free_port
from tests.support.config import write_config
from tests.support.gateway import GatewayProcess
from tests.support.measure import cpu_seconds, percentile
from tests.support.waiting import wait_for, wait_until, wait_until_async
from tests.support.zk_push import push_record_id

GATEWAY_ID = "bench-push"
ZONE = "Asia/Shanghai"  # the emulator's default firmware: Chinese, GB18030
ENCODING = "gb18030"
BACKLOG = 100_000
BACKLOG_SN = "CKUW200000001"
RUNS = 3  # per contender, alternating
LOOPBACK = "127.0.0.1"


# --- the probe -----------------------------------------------------------------------------------


def _probe_app(out: Path) -> web.Application:
    """The least a receiver must do: parse each ATTLOG line, append, fsync, answer `OK: n`."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def cdata(request: web.Request) -> web.Response:
        sn = request.query.get("SN", "")
        if request.method == "GET":  # the handshake: nothing stored yet, realtime on
            options = protocol.Options(
                stamps={},
                utc_offset=dt.timedelta(hours=8),
                realtime=True,
                delay=10,
                error_delay=30,
                trans_interval=1,
                tables=("ATTLOG", "OPERLOG"),
            )
            return web.Response(text=protocol.option_block(sn, options, pushver=request.query.get("pushver")))
        body = await request.read()
        if request.query.get("table") != "ATTLOG":
            return web.Response(text=f"OK: {len(body.splitlines())}")
        rows = []
        for raw in body.split(b"\n"):
            if not raw:
                continue
            pin, when, state, verify, *_rest = raw.decode(ENCODING).split("\t")
            stamp = dt.datetime.strptime(when, "%Y-%m-%d %H:%M:%S")
            rows.append(f"{pin}\t{stamp.isoformat()}\t{int(state)}\t{int(verify)}\n")
        os.write(fd, "".join(rows).encode())
        os.fsync(fd)
        return web.Response(text=f"OK: {len(rows)}")

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="OK")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/iclock/cdata", cdata)
    app.router.add_route("*", "/iclock/getrequest", ok)
    app.router.add_route("*", "/iclock/devicecmd", ok)
    return app


async def _serve_probe(port: int, out: Path) -> None:
    runner = web.AppRunner(_probe_app(out), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


class ProbeProcess:
    """The probe server in a child process of its own, as the gateway is; stopped by pid."""

    def __init__(self, workdir: Path, run: int) -> None:
        self.port = free_port()
        self.out = workdir / f"probe-{run}.tsv"
        self.log_path = workdir / f"probe-{run}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ProbeProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_push", "--probe", str(self.port), str(self.out)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,
            )
        process = self.process
        try:
            wait_until(
                lambda: _listening(self.port),
                timeout=30,
                message=f"the probe on port {self.port} (see {self.log_path})",
                abort=lambda: None if process.poll() is None else f"it exited with {process.returncode}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


# --- 1. the backlog ------------------------------------------------------------------------------


@dataclass
class Upload:
    """One contender's run: seconds to the last OK, and what it cost."""

    contender: str
    records: int
    seconds: float
    cpu_seconds: float  # the server process's user+system time during the upload
    retries: int  # times the terminal had to start over (0 when all went well)
    delivered_seconds: float | None = None  # gateway: until the subscriber held every id

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def _push_terminal(name: str, serial: str) -> dict[str, Any]:
    return {"type": "zk-push", "name": name, "serial_number": serial, "timezone": ZONE, "encoding": ENCODING}


def _backlog_emulator(port: int, records: int) -> ZkPushEmulator:
    # delay: no heartbeat comes between the posts of the upload (the first one follows it).
    return ZkPushEmulator(
        f"http://{LOOPBACK}:{port}",
        BACKLOG_SN,
        records=records,
        days=90,
        users=200,
        timezone=ZONE,
        encoding=ENCODING,
        seed=11,
        delay=300,
        error_delay=1,
    )


def _ids(sn: str, records: list[PushRecord]) -> set[str]:
    return {push_record_id(sn, r) for r in records}


async def _upload(emulator: ZkPushEmulator, server_pid: int) -> tuple[float, float]:
    """Start the terminal and wait for the OK of its last record: (seconds, server CPU seconds)."""
    last = emulator.records[-1].seq
    cpu0 = cpu_seconds(server_pid)
    started = time.perf_counter()
    await emulator.start()
    try:
        await wait_until_async(
            lambda: emulator.stamp >= last,
            timeout=600,
            interval=0.005,
            message=lambda: f"the backlog acknowledged (stamp {emulator.stamp} of {last})",
        )
        return time.perf_counter() - started, cpu_seconds(server_pid) - cpu0
    finally:
        await emulator.stop()


async def _probe_run(workdir: Path, run: int, records: int) -> Upload:
    probe = await asyncio.to_thread(ProbeProcess(workdir, run).start)
    try:
        emulator = _backlog_emulator(probe.port, records)
        seconds, cpu = await _upload(emulator, probe.pid)
    finally:
        probe.stop()
    stored = sum(1 for _ in probe.out.open("rb"))
    if stored < records:
        raise RuntimeError(f"the probe stored {stored} of {records} records")
    return Upload("probe", records, seconds, cpu, emulator.counters.retries)


async def _gateway_run(workdir: Path, broker_port: int, run: int, records: int) -> Upload:
    gateway_id = f"{GATEWAY_ID}-{run}"
    port = free_port()
    config = write_config(
        workdir / f"backlog-{run}.toml",
        gateway_id=gateway_id,
        broker_port=broker_port,
        buffer_path=workdir / f"backlog-{run}.db",
        sections={"push": {"bind": LOOPBACK, "port": port}},
        terminals=[_push_terminal("backlog", BACKLOG_SN)],
        timezone=ZONE,
    )
    collector = await asyncio.to_thread(PunchCollector(broker_port, gateway_id).start)
    gateway = GatewayProcess(config, log_path=workdir / f"gateway-backlog-{run}.log")
    try:
        await asyncio.to_thread(gateway.start)
        emulator = _backlog_emulator(port, records)
        ids = _ids(BACKLOG_SN, emulator.records)
        started = time.perf_counter()
        seconds, cpu = await _upload(emulator, gateway.pid)
        await gateway.wait_until_async(
            lambda: collector.unique >= len(ids),
            timeout=300,
            interval=0.02,
            message=lambda: f"every record at the subscriber ({collector.unique} of {len(ids)})",
        )
        delivered = time.perf_counter() - started
        if not ids <= collector.snapshot().keys():
            raise RuntimeError("the subscriber got ids the terminal never had")
        return Upload("gateway", records, seconds, cpu, emulator.counters.retries, delivered)
    finally:
        await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(collector.stop)


async def _backlog(workdir: Path, broker_port: int, records: int, runs: int) -> list[Upload]:
    uploads = []
    for run in range(runs):
        for contender in ("probe", "gateway"):
            if contender == "probe":
                upload = await _probe_run(workdir, run, records)
            else:
                upload = await _gateway_run(workdir, broker_port, run, records)
            print(
                f"  run {run + 1}/{runs} {contender}: {upload.rate:,.0f} records/s ({upload.seconds:.2f} s, "
                f"load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            uploads.append(upload)
    return uploads


# --- 2. real time --------------------------------------------------------------------------------


@dataclass
class Realtime:
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (punch time, seconds)
    missing: int = 0
    punched: int = 0
    floor: list[float] = field(default_factory=list)
    cpu: float = 0.0  # % of one core while punching
    idle_cpu: float = 0.0  # % of one core with heartbeats only
    window: float = 0.0
    idle_window: float = 0.0
    peak_rss: float = 0.0
    bench_cpu: float = 0.0  # this process (emulators, subscriber) while punching
    warmup_retries: int = 0  # terminals that had to start over before every backlog was in
    retries: int = 0  # ... and after (heartbeats-only and punching windows)
    heartbeats: int = 0


def _arrived(collector: PunchCollector, marker: str) -> Callable[[], bool]:
    return lambda: marker in collector.first_seen


def _broker_floor(port: int, collector: PunchCollector, gateway_id: str, samples: int) -> list[float]:
    """Latency of a bare QoS 1 publish → the same subscriber, through the same broker."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"floor-{uuid.uuid4().hex[:6]}"
    )
    client.connect(LOOPBACK, port)
    client.loop_start()
    latencies = []
    try:
        for n in range(samples):
            marker = f"floor-{uuid.uuid4().hex}"
            body = json.dumps({"device": "floor", "records": [{"id": marker}]})
            sent = time.time()
            client.publish(f"punchgate/{gateway_id}/devices/floor/punches", body, qos=1).wait_for_publish(5)
            if not wait_for(_arrived(collector, marker), timeout=5, interval=0.0005):
                raise RuntimeError(f"floor message {n} never arrived")
            latencies.append(collector.first_seen[marker] - sent)
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    return latencies


async def _punch(emulators: list[ZkPushEmulator], seconds: float, rate: float, seed: int) -> dict[str, float]:
    """Punches on random terminals by their enrolled users, Poisson arrivals at `rate`/s for
    `seconds`; record id -> the wall time just before the punch."""
    rng = random.Random(seed)
    punched: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        await asyncio.sleep(rng.expovariate(rate))
        if loop.time() >= end:
            return punched
        emulator = rng.choice(emulators)
        pin = rng.choice(list(emulator.users))  # enrolled: no OPERLOG post ahead of the punch
        state = rng.choice((0, 1))
        at = time.time()
        record = emulator.punch(pin, state=state, verify=1)
        (punch_id,) = _ids(emulator.sn, [record])
        punched.setdefault(punch_id, at)  # the same user, second and state twice is one punch


def _cpu_percent(pid: int, cpu0: float, t0: float) -> tuple[float, float]:
    wall = time.monotonic() - t0
    return (cpu_seconds(pid) - cpu0) / wall * 100, wall


async def _realtime(workdir: Path, broker_port: int, terminals: int, seconds: float, rate: float) -> Realtime:
    port = free_port()
    serials = [f"CKRT{n:09d}" for n in range(terminals)]
    config = write_config(
        workdir / "realtime.toml",
        gateway_id=GATEWAY_ID,
        broker_port=broker_port,
        buffer_path=workdir / "realtime.db",
        sections={"push": {"bind": LOOPBACK, "port": port}},
        terminals=[_push_terminal(f"p{n:03d}", sn) for n, sn in enumerate(serials)],
        timezone=ZONE,
    )
    outcome = Realtime()
    collector = await asyncio.to_thread(PunchCollector(broker_port, GATEWAY_ID).start)
    gateway = GatewayProcess(config, log_path=workdir / "gateway-realtime.log")
    emulators = [
        ZkPushEmulator(
            f"http://{LOOPBACK}:{port}", sn, records=10, users=20, timezone=ZONE, seed=n, error_delay=2
        )
        for n, sn in enumerate(serials)
    ]
    try:
        await asyncio.to_thread(gateway.start)
        for emulator in emulators:  # staggered, as terminals powered on together still are
            await emulator.start()
            await asyncio.sleep(0.01)
        history = {i for e in emulators for i in _ids(e.sn, e.records)}
        await gateway.wait_until_async(
            lambda: history <= collector.first_seen.keys(),
            timeout=120,
            interval=0.2,
            message="every terminal's backlog at the subscriber",
        )
        outcome.warmup_retries = sum(e.counters.retries for e in emulators)
        await asyncio.sleep(5)  # settle: the backlog's after-work (digests, state) is not the idle cost
        # Heartbeats only (the broker floor is measured meanwhile: it does not touch the gateway).
        cpu0, t0 = gateway.cpu_seconds(), time.monotonic()
        floor_task = asyncio.create_task(
            asyncio.to_thread(_broker_floor, broker_port, collector, GATEWAY_ID, 200)
        )
        await asyncio.sleep(max(10.0, seconds / 4))
        outcome.floor = await floor_task
        outcome.idle_cpu, outcome.idle_window = _cpu_percent(gateway.pid, cpu0, t0)
        # Punching.
        heartbeats0 = sum(e.counters.heartbeats for e in emulators)
        cpu0, t0, own0 = gateway.cpu_seconds(), time.monotonic(), cpu_seconds(os.getpid())
        punched = await _punch(emulators, seconds, rate, seed=7)
        outcome.cpu, outcome.window = _cpu_percent(gateway.pid, cpu0, t0)
        outcome.bench_cpu = (cpu_seconds(os.getpid()) - own0) / outcome.window * 100
        outcome.heartbeats = sum(e.counters.heartbeats for e in emulators) - heartbeats0
        await wait_for_async_ids(collector, set(punched), timeout=30)
        arrived = collector.snapshot()
        outcome.punched = len(punched)
        outcome.latencies = [(t, arrived[i] - t) for i, t in punched.items() if i in arrived]
        outcome.missing = len(punched) - len(outcome.latencies)
        outcome.peak_rss = gateway.peak_rss_mb()
        outcome.retries = sum(e.counters.retries for e in emulators) - outcome.warmup_retries
        return outcome
    finally:
        for emulator in emulators:
            await emulator.stop()
        await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(collector.stop)


async def wait_for_async_ids(collector: PunchCollector, ids: set[str], *, timeout: float) -> None:
    """Wait (without failing) until the subscriber holds every id, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ids <= collector.first_seen.keys():
        await asyncio.sleep(0.05)


# --- figures -------------------------------------------------------------------------------------


def _median(uploads: list[Upload], contender: str, value: Callable[[Upload], float]) -> float:
    return statistics.median(value(u) for u in uploads if u.contender == contender)


def _runs(uploads: list[Upload], contender: str) -> str:
    rates = [u.rate for u in uploads if u.contender == contender]
    return f"{', '.join(f'{r:,.0f}' for r in rates)} (spread {min(rates):,.0f}–{max(rates):,.0f})"


def _backlog_figures(result: BenchResult, uploads: list[Upload]) -> None:
    gateway = _median(uploads, "gateway", lambda u: u.rate)
    probe = _median(uploads, "probe", lambda u: u.rate)
    runs = sum(1 for u in uploads if u.contender == "gateway")
    records = uploads[0].records
    result.note(
        f"backlog: {records:,} records (200 users, 90 days) in posts of 500 lines, GB18030; {runs} runs per "
        f"contender, alternating, medians compared. Runs (records/s): gateway {_runs(uploads, 'gateway')}; "
        f"probe {_runs(uploads, 'probe')}"
    )
    delivered = _median(uploads, "gateway", lambda u: u.delivered_seconds or 0.0)
    result.note(
        f"server CPU per upload (median): gateway {_median(uploads, 'gateway', lambda u: u.cpu_seconds):.1f} s, "
        f"probe {_median(uploads, 'probe', lambda u: u.cpu_seconds):.1f} s; the gateway answers a backlog part once "
        f"it is committed staged and moves and forwards the parts after the upload (docs/zk-push.md): the "
        f"subscriber held all {records:,} ids {delivered:.1f} s after the terminal's start (median); terminal "
        f"retries: {sum(u.retries for u in uploads)}"
    )
    result.add(
        Figure(
            "backlog upload, committed and acknowledged (OK)",
            gateway,
            "records/s",
            goal="≥ 0.5× the probe",
            met=gateway >= 0.5 * probe,
            versus="bare aiohttp parse + append + fsync probe",
            versus_value=probe,
            ratio=gateway / probe,
        )
    )


def _thirds(outcome: Realtime) -> Iterator[float]:
    """p99 (ms) of the punches in each third of the punching window: the spread over time."""
    if not outcome.latencies:
        return
    start = min(t for t, _ in outcome.latencies)
    span = max(t for t, _ in outcome.latencies) - start or 1.0
    parts: list[list[float]] = [[], [], []]
    for t, seconds in outcome.latencies:
        parts[min(2, int((t - start) / span * 3))].append(seconds * 1000)
    for part in parts:
        if part:
            yield percentile(part, 99)


def _realtime_figures(result: BenchResult, outcome: Realtime, terminals: int, rate: float) -> None:
    ms = [s * 1000 for _, s in outcome.latencies] + [float("inf")] * outcome.missing
    floor = [s * 1000 for s in outcome.floor]
    thirds = ", ".join(f"{p:.1f}" for p in _thirds(outcome))
    result.note(
        f"real time: {terminals} terminals (Delay 10 s: {outcome.heartbeats / outcome.window:.1f} heartbeats/s), "
        f"{outcome.punched:,} punches at {rate:.0f}/s (Poisson) over {outcome.window:.0f} s; "
        f"{outcome.missing} never arrived (counted as infinitely late); max {max(ms):.1f} ms; p99 per third of "
        f"the window {thirds} ms; heartbeats-only window {outcome.idle_window:.0f} s"
    )
    result.note(
        f"terminal retries (an error answer or none, then a wait of ErrorDelay, here 2 s): "
        f"{outcome.warmup_retries} while the {terminals} terminals, started 10 ms apart, shook hands and "
        f"uploaded their 10 records each (the listener answers 503 busy beyond 64 requests in progress), "
        f"{outcome.retries} afterwards"
    )
    result.note(
        f"gateway peak RSS {outcome.peak_rss:.0f} MiB; this process (the {terminals} emulated terminals and the "
        f"subscriber) used {outcome.bench_cpu:.0f} % of a core while punching; broker floor ({len(floor)} samples): "
        f"p50 {percentile(floor, 50):.2f} ms, p99 {percentile(floor, 99):.2f} ms"
    )
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    result.add(
        Figure(
            "punch → subscriber p50",
            p50,
            "ms",
            versus="broker floor p50",
            versus_value=percentile(floor, 50),
            ratio=p50 / percentile(floor, 50),
        )
    )
    result.add(
        Figure(
            "punch → subscriber p99",
            p99,
            "ms",
            goal="≤ 100 ms",
            met=p99 <= 100,
            versus="broker floor p99",
            versus_value=percentile(floor, 99),
            ratio=p99 / percentile(floor, 99),
        )
    )
    result.add(
        Figure(
            "gateway CPU while punching (100 % = one core)",
            outcome.cpu,
            "%",
            versus="same terminals, heartbeats only",
            versus_value=outcome.idle_cpu,
            ratio=outcome.cpu / outcome.idle_cpu if outcome.idle_cpu > 0 else None,
        )
    )


def run(workdir: Path, *, quick: bool) -> BenchResult:
    # --quick: a smaller backlog (still RUNS runs each) and fewer terminals for less time.
    records, terminals, seconds = (30_000, 30, 20.0) if quick else (BACKLOG, 200, 60.0)
    rate = 20.0
    result = BenchResult(
        name="push",
        title=f"push: a {records:,}-record backlog from one terminal; {terminals} terminals punching {rate:.0f}/s",
        command="python -m bench --only push" + (" --quick" if quick else ""),
        quick=quick,
    )
    with contextlib.ExitStack() as cleanup:
        broker = Broker(workdir / "broker")
        cleanup.callback(broker.stop)
        broker.start()
        uploads = asyncio.run(_backlog(workdir, broker.port, records, RUNS))
        _backlog_figures(result, uploads)
        outcome = asyncio.run(_realtime(workdir, broker.port, terminals, seconds, rate))
        _realtime_figures(result, outcome, terminals, rate)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_push")
    parser.add_argument("--probe", nargs=2, metavar=("PORT", "FILE"), help="serve the probe until SIGTERM")
    args = parser.parse_args(argv)
    if args.probe:
        asyncio.run(_serve_probe(int(args.probe[0]), Path(args.probe[1])))
        return 0
    parser.error("use python -m bench --only push [--quick] for the benchmark")
    return 2


if __name__ == "__main__":
    sys.exit(main())
