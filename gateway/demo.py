"""`punchgate demo`: the whole pipeline on one machine, with nothing but loopback.

It starts a private mosquitto on a free port, three emulated ZK terminals (two TFT over TCP,
one of them with a comm key, and one BW over UDP), two emulated Anviz terminals sharing one
pseudo-terminal (an RS485 bus), and the real gateway as a child process with its
buffer in a temporary folder. People punch at random on the terminals; a "central" subscriber
shows the punches arriving and each terminal's health. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from punchgate.drivers.anviz.emulator import EmulatedTerminal as AnvizEmulator
from punchgate.drivers.anviz.emulator import PtyBus
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.logs import configure_logging
from punchgate.gateway.mosquitto import MosquittoBroker, free_port

GATEWAY_ID = "demo-gw"
COMM_KEY = 1234
STATE_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}


@dataclass
class CentralView:
    """What the central subscriber has seen."""

    punches: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=14))
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    gateway_state: str = "unknown"

    def on_message(self, topic: str, payload: dict[str, Any]) -> None:
        parts = topic.split("/")
        if parts[-1] == "punches":
            for record in payload["records"]:
                if record["id"] in self.ids:
                    self.duplicates += 1
                    continue
                self.ids.add(record["id"])
                self.punches.appendleft({"device": payload["device"], **record})
        elif parts[-1] == "state" and "devices" in parts:
            self.devices[parts[-2]] = payload
        elif parts[-1] == "events":
            self.events.appendleft(
                f"{payload['time'][11:19]} {parts[-2]}: {payload['event']} {payload['code']}"
            )
        elif parts[-1] == "state":
            self.gateway_state = payload.get("state", "?")

    def render(self, produced: int) -> Group:
        punches = Table(title="punches arriving at central", title_justify="left", expand=True)
        for column in ("device", "user", "local time", "UTC", "state", "verify", "source", "id"):
            punches.add_column(column, no_wrap=True)
        for p in self.punches:
            punches.add_row(
                p["device"],
                p["user_id"],
                p["local_time"][:19],
                p["utc_time"][11:19],
                p["state"]["name"] or str(p["state"]["code"]),
                p["verify"]["name"] or str(p["verify"]["code"]),
                f"[bold magenta]{p['source']}[/]" if p["source"] == "live" else p["source"],
                p["id"][:10],
            )
        devices = Table(title="terminals (retained state topics)", title_justify="left", expand=True)
        for column in ("terminal", "state", "faults", "serial", "records", "drift"):
            devices.add_column(column)
        for name, d in sorted(self.devices.items()):
            drift = d.get("clock_drift_seconds")
            devices.add_row(
                name,
                f"[{STATE_STYLE.get(d['state'], 'white')}]{d['state']}[/]",
                ", ".join(f["code"] for f in d.get("faults", [])) or "—",
                d.get("serial_number") or "?",
                f"{d.get('record_count')}/{d.get('record_capacity')}",
                "—" if drift is None else f"{drift:+.0f} s",
            )
        summary = (
            f"gateway: [bold]{self.gateway_state}[/] · punched on terminals: {produced} · "
            f"unique punches received: {len(self.ids)} · duplicates ignored: {self.duplicates} · Ctrl-C to stop"
        )
        return Group(devices, punches, summary, *(f"[dim]{e}[/]" for e in self.events))


def _write_config(workdir: Path, broker_port: int, emulators: dict[str, ZkEmulator], anviz_pty: str) -> Path:
    tft_a, tft_b, bw = emulators["gate-north"], emulators["gate-south"], emulators["canteen"]
    config = f"""
gateway_id = "{GATEWAY_ID}"
site = "demo"
timezone = "Europe/Berlin"

[mqtt]
host = "127.0.0.1"
port = {broker_port}

[buffer]
path = "{workdir / "buffer.db"}"

[http]
port = {free_port()}

[[terminals]]
type = "zk"
name = "gate-north"
host = "127.0.0.1"
port = {tft_a.tcp_port}
poll_interval = 30

[[terminals]]
type = "zk"
name = "gate-south"
host = "127.0.0.1"
port = {tft_b.tcp_port}
poll_interval = 30
# comm key: from PUNCHGATE_COMM_KEY_GATE_SOUTH, as a site would keep it out of the file

[[terminals]]
type = "zk"
name = "canteen"
host = "127.0.0.1"
port = {bw.udp_port}
transport = "udp"
poll_interval = 20
timezone = "Asia/Shanghai"

# two Anviz terminals on one RS485 line (a pseudo-terminal here), addressed by device id
[[terminals]]
type = "anviz"
name = "assembly-1"
endpoint = "serial://{anviz_pty}?baud=9600"
device_id = 1
poll_interval = 10

[[terminals]]
type = "anviz"
name = "assembly-2"
endpoint = "serial://{anviz_pty}?baud=9600"
device_id = 2
poll_interval = 10
"""
    path = workdir / "punchgate.toml"
    path.write_text(config)
    return path


async def _subscribe(port: int, view: CentralView, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="demo-central") as client:
                await client.subscribe(f"punchgate/{GATEWAY_ID}/#", qos=1)
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes | bytearray) and payload:
                        view.on_message(str(message.topic), json.loads(payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)


async def _punch_at_random(emulators: list[ZkEmulator], stop: asyncio.Event, produced: list[int]) -> None:
    rng = random.Random()
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        emulator = rng.choice(emulators)
        emulator.add_punch(str(rng.randint(1, 25)), state=rng.choice((0, 1)), verify=rng.choice((1, 15, 2)))
        produced[0] += 1


async def _punch_anviz_at_random(
    terminals: list[AnvizEmulator], stop: asyncio.Event, produced: list[int]
) -> None:
    rng = random.Random()
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(2.0, 6.0))
        rng.choice(terminals).punch(rng.randint(1000, 1019), state=rng.choice((0, 1)), backup_code=0x01)
        produced[0] += 1


def _zone_offset(zone: str) -> dt.timedelta:
    """How far the wall clock in `zone` is from this host's local wall clock."""
    here = dt.datetime.now()
    there = dt.datetime.now(ZoneInfo(zone)).replace(tzinfo=None)
    return dt.timedelta(seconds=round((there - here).total_seconds()))


async def _wait_for_last_punches(
    view: CentralView, produced: int, gateway: subprocess.Popen[bytes], console: Console
) -> None:
    """Punching has stopped: give the pipeline a moment to deliver what is in flight."""
    deadline = time.monotonic() + 10
    with console.status("waiting for the last punches to arrive…"):
        while len(view.ids) < produced and time.monotonic() < deadline and gateway.poll() is None:
            await asyncio.sleep(0.2)


async def _demo(duration: float) -> int:
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="punchgate-demo-"))
    broker = MosquittoBroker()
    # Emulator logs go to a file: the screen belongs to the central view. (Before building the
    # emulators: they bind their loggers when constructed.)
    emulator_log = (workdir / "emulators.log").open("a", encoding="utf-8")
    configure_logging("info", stream=emulator_log, json=True)
    # The emulators' clocks read the host's time; shift them so each terminal shows the wall
    # time of the zone it is configured in, as a real terminal on site would.
    berlin, shanghai = _zone_offset("Europe/Berlin"), _zone_offset("Asia/Shanghai")
    emulators = {
        "gate-north": ZkEmulator(
            profile="tft", serial_number="DEMO-TFT-0001", transports=("tcp",), clock_offset=berlin
        ),
        "gate-south": ZkEmulator(
            profile="tft",
            serial_number="DEMO-TFT-0002",
            comm_key=COMM_KEY,
            transports=("tcp",),
            clock_offset=berlin,
        ),
        "canteen": ZkEmulator(
            profile="bw", serial_number="DEMO-BW-0003", transports=("udp",), clock_offset=shanghai
        ),
    }
    anviz = [
        AnvizEmulator(1, serial_number="DEMO-ANVIZ-0001"),
        AnvizEmulator(2, serial_number="DEMO-ANVIZ-0002"),
    ]
    for terminal in anviz:
        terminal.clock_offset = berlin
    anviz_bus = PtyBus(anviz)
    gateway: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    produced = [0]
    view = CentralView()
    try:
        broker.start()
        for seed, emulator in enumerate(emulators.values()):
            emulator.generate_log(records=40, days=3, users=25, seed=seed)
            await emulator.start()
        for terminal in anviz:
            terminal.add_history(30)
        anviz_bus.start()
        produced[0] = sum(len(e.records) for e in emulators.values()) + sum(len(t.records) for t in anviz)
        config = _write_config(workdir, broker.port, emulators, anviz_bus.path)
        env = {**os.environ, "PUNCHGATE_COMM_KEY_GATE_SOUTH": str(COMM_KEY)}
        log_path = workdir / "gateway.log"
        with log_path.open("ab") as gateway_log:
            gateway = subprocess.Popen(  # noqa: ASYNC220  (spawning returns at once)
                [
                    sys.executable,
                    "-m",
                    "punchgate.gateway",
                    "run",
                    "--config",
                    str(config),
                    "--log-format",
                    "json",
                ],
                stdout=gateway_log,
                stderr=gateway_log,
                env=env,
            )
        console.print(
            f"[bold]punchgate demo[/]: broker 127.0.0.1:{broker.port} · 5 emulated terminals · "
            f"gateway pid {gateway.pid} (log: {log_path})"
        )
        tasks = [
            asyncio.create_task(_subscribe(broker.port, view, stop)),
            asyncio.create_task(_punch_at_random(list(emulators.values()), stop, produced)),
            asyncio.create_task(_punch_anviz_at_random(anviz, stop, produced)),
        ]
        deadline = time.monotonic() + duration if duration > 0 else None
        with Live(view.render(produced[0]), console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if gateway.poll() is not None:
                    console.print(f"[red]the gateway exited with {gateway.returncode}; see {log_path}[/]")
                    break
                live.update(view.render(produced[0]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        punchers, subscriber = tasks[1:], tasks[0]
        for task in punchers:
            task.cancel()
        await _wait_for_last_punches(view, produced[0], gateway, console)
        stop.set()
        subscriber.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        console.print()
        console.print(f"stopped: {produced[0]} punches on the terminals, {len(view.ids)} unique received.")
        return 0 if gateway.returncode in (None, 0) else 1
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        for emulator in emulators.values():
            with contextlib.suppress(Exception):
                await emulator.stop()
        anviz_bus.stop()
        broker.close()
        emulator_log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def run_demo(*, duration: float = 0) -> int:
    return asyncio.run(_demo(duration))


__all__ = ["CentralView", "run_demo"]
