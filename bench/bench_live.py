"""live latency: 100 terminals in live mode, punches at random, punch → subscriber.

The terminals are emulated in this process (so the punch moment and the arrival share one
clock), the gateway is the real daemon in its own process, the subscriber is a paho client
on its own thread. Each punch's latency is from just before `add_punch` on the terminal to
the subscriber's callback for the batch holding its id. The same run measures the floor:
a bare QoS 1 publish from this process through the same broker to the same subscriber.

The punches go in 3 rounds, each after its own floor samples (floor, punches, floor, ...);
each figure is the median of the rounds' percentiles, with the spread, and its ratio the
median of each round's percentile over that round's floor.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.collector import PunchCollector
from bench.results import BenchResult, Figure, LoadWindow
from punchgate.drivers.zk.driver import raw_punch_from_record
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.normalize import record_id
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.measure import percentile
from tests.support.waiting import wait_for, wait_until_async
from tests.support.zk import expected_ids, listening_for_punches

GATEWAY_ID = "bench-live"


def _arrived(collector: PunchCollector, record_id: str) -> Callable[[], bool]:
    return lambda: record_id in collector.first_seen


def _broker_floor(port: int, collector: PunchCollector, samples: int) -> list[float]:
    """Latency of a bare QoS 1 publish → the same subscriber, through the same broker."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"floor-{uuid.uuid4().hex[:6]}"
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    latencies = []
    try:
        for n in range(samples):
            marker = f"floor-{uuid.uuid4().hex}"
            body = json.dumps({"device": "floor", "records": [{"id": marker}]})
            sent = time.time()
            client.publish(f"punchgate/{GATEWAY_ID}/devices/floor/punches", body, qos=1).wait_for_publish(5)
            if not wait_for(_arrived(collector, marker), timeout=5, interval=0.0005):
                raise RuntimeError(f"floor message {n} never arrived")
            latencies.append(collector.first_seen[marker] - sent)
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    return latencies


async def _inject(emulators: list[ZkEmulator], count: int, rate: float, seed: int) -> dict[str, float]:
    """`count` punches on random terminals, Poisson arrivals at `rate`/s; id -> punch time."""
    rng = random.Random(seed)
    punched: dict[str, float] = {}
    for n in range(count):
        await asyncio.sleep(rng.expovariate(rate))
        emulator = rng.choice(emulators)
        user = str(1 + n % 200)
        at = time.time()
        record = emulator.add_punch(user, state=n % 2, verify=1)
        if record is not None:
            punched[record_id(emulator.serial_number, raw_punch_from_record(record))] = at
    return punched


ROUNDS = 3


async def _measure(
    workdir: Path, terminals: int, punches: int, rate: float
) -> tuple[list[list[float]], list[list[float]], int]:
    """Per round: the punches' latencies and the floor's (seconds); punches that never came."""
    broker = Broker(workdir / "broker")
    broker.start()
    emulators = [
        ZkEmulator(profile="tft", serial_number=f"LIVE{n:05d}", transports=("tcp",), name=f"l{n:03d}")
        for n in range(terminals)
    ]
    collector: PunchCollector | None = None
    gateway: GatewayProcess | None = None
    try:
        for n, emulator in enumerate(emulators):
            emulator.generate_log(records=50, days=5, users=200, seed=n)
            await emulator.start()
        collector = await asyncio.to_thread(PunchCollector(broker.port, GATEWAY_ID).start)
        config = write_config(
            workdir / "live.toml",
            gateway_id=GATEWAY_ID,
            broker_port=broker.port,
            buffer_path=workdir / "live.db",
            terminals=[zk_terminal(e.name, e, poll_interval=60, live=True) for e in emulators],
        )
        gateway = GatewayProcess(config, log_path=workdir / "gateway-live.log")
        await asyncio.to_thread(gateway.start)  # the emulators on this loop keep answering meanwhile
        history = {i for e in emulators for i in expected_ids(e)}
        await gateway.wait_until_async(
            lambda: len(gateway.events("full_read")) >= terminals and history <= collector.first_seen.keys(),
            timeout=120,
            interval=0.2,
            message="every terminal's history read and delivered",
        )
        await wait_until_async(
            lambda: all(listening_for_punches(e) for e in emulators),
            timeout=30,
            message="every worker registered for live punches",
        )
        floors: list[list[float]] = []
        rounds: list[list[float]] = []
        missing = 0
        expected = len(history)
        for n in range(ROUNDS):
            floors.append(await asyncio.to_thread(_broker_floor, broker.port, collector, 70))
            punched = await _inject(emulators, punches // ROUNDS, rate, seed=7 + n)
            expected += 70 + len(punched)
            await asyncio.to_thread(collector.wait_unique, expected, 90)
            arrived = collector.snapshot()
            rounds.append([arrived[i] - t for i, t in punched.items() if i in arrived])
            missing += len(punched) - len(rounds[-1])
        return rounds, floors, missing
    finally:
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        if collector is not None:
            await asyncio.to_thread(collector.stop)
        for emulator in emulators:
            await emulator.stop()
        broker.stop()


def run(workdir: Path, *, quick: bool) -> BenchResult:
    terminals = 100
    punches, rate = (300, 10.0) if quick else (1500, 10.0)
    result = BenchResult(
        name="live",
        title=f"live latency: {terminals} terminals in live mode, {punches:,} punches at random",
        command="python -m bench --only live" + (" --quick" if quick else ""),
        quick=quick,
    )
    with LoadWindow() as load:
        rounds, floors, missing = asyncio.run(_measure(workdir, terminals, punches, rate))
    if missing:
        raise RuntimeError(f"{missing} live punches never arrived")
    ms = [[x * 1000 for x in latencies] for latencies in rounds]
    floor_ms = [[x * 1000 for x in floor] for floor in floors]
    everything = [x for r in ms for x in r]
    result.note(
        f"{punches:,} punches in {ROUNDS} rounds, Poisson arrivals at {rate:.0f}/s over {terminals} terminals "
        f"(poll_interval 60 s: polls run during the test); max {max(everything):.1f} ms; broker floor (bare "
        f"QoS 1 publish to the same subscriber, {sum(len(f) for f in floor_ms)} samples before the rounds): "
        f"p50 {percentile([x for f in floor_ms for x in f], 50):.2f} ms"
    )
    result.add(
        Figure.of_runs(
            "punch → subscriber p50",
            [percentile(r, 50) for r in ms],
            "ms",
            versus="broker floor p50",
            versus_runs=[percentile(f, 50) for f in floor_ms],
            load=load,
        )
    )
    result.add(
        Figure.of_runs(
            "punch → subscriber p99",
            [percentile(r, 99) for r in ms],
            "ms",
            goal="≤ 100 ms",
            check=lambda value, _ratio: value <= 100,
            versus="broker floor p99",
            versus_runs=[percentile(f, 99) for f in floor_ms],
            load=load,
        )
    )
    return result
