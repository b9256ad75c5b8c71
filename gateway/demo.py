"""`punchgate demo`: the whole pipeline on one machine, with nothing but loopback.

It starts a private mosquitto on a free port, three emulated ZK terminals (two TFT over TCP,
one of them with a comm key, and one BW over UDP), two emulated Anviz terminals sharing one
pseudo-terminal (an RS485 bus), an emulated push terminal (ADMS) uploading to the gateway's
`[push]` listener, and the real gateway as a child process. People punch at random on the
terminals; a "central" subscriber shows the punches arriving and each terminal's health: a
live table on a terminal, one line per arrival when the output is piped (`| tee`), flushed as
it comes. A console account (admin, a random password) is created before the gateway starts,
and printed with the status page's address. Ctrl-C stops everything it started. The config,
the buffer and every log (gateway, emulators, broker) stay in a folder under the system's temp
directory, named at start and at exit, for a look afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from punchgate.drivers.anviz.emulator import EmulatedTerminal as AnvizEmulator
from punchgate.drivers.anviz.emulator import PtyBus
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.gateway.console.accounts import Accounts
from punchgate.gateway.logs import configure_logging
from punchgate.gateway.mosquitto import MosquittoBroker, free_port

GATEWAY_ID = "demo-gw"
COMM_KEY = 1234
PUSH_TERMINAL = "reception"  # the push terminal's name in the config
PUSH_SERIAL = "DEMO-PUSH-0006"
PUSH_RATE = 0.5  # punches a second on the push terminal (Poisson; the three ZK ones: about 0.8 together)
CONSOLE_ACCOUNT = "admin"
BATCH_AS_ONE_LINE = 3  # piped output: a backlog batch larger than this is one line, not one per punch
PROGRESS_EVERY = 10.0  # piped output: seconds between progress lines
STATE_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}
SOURCE_STYLE = {"live": "bold magenta", "push": "bold cyan"}


@dataclass
class CentralView:
    """What the central subscriber has seen."""

    punches: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=14))
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    gateway_state: str = "unknown"
    footer: str = ""  # where to look: the status page, /metrics, `punchgate status`
    # Plain lines of what arrived, for output that is not a terminal; None: not kept.
    lines: list[str] | None = None

    def on_message(self, topic: str, payload: dict[str, Any]) -> None:
        parts = topic.split("/")
        if parts[-1] == "punches":
            new = []
            for record in payload["records"]:
                if record["id"] in self.ids:
                    self.duplicates += 1
                    continue
                self.ids.add(record["id"])
                new.append(record)
                self.punches.appendleft({"device": payload["device"], **record})
            self._say_punches(payload["device"], new)
        elif parts[-1] == "state" and "devices" in parts:
            if self.devices.get(parts[-2], {}).get("state") != payload.get("state"):
                self._say(f"terminal {parts[-2]}: {payload.get('state')} {_faults_text(payload)}")
            self.devices[parts[-2]] = payload
        elif parts[-1] == "events":
            event = f"{parts[-2]}: {payload['event']} {payload['code']}"
            self.events.appendleft(f"{payload['time'][11:19]} {event}")
            self._say(f"event {event}: {payload.get('detail', '')}")
        elif parts[-1] == "state":
            if payload.get("state", "?") != self.gateway_state:
                self._say(f"gateway: {payload.get('state', '?')}")
            self.gateway_state = payload.get("state", "?")

    def _say(self, text: str) -> None:
        if self.lines is not None:
            self.lines.append(f"{dt.datetime.now():%H:%M:%S} {text}")

    def _say_punches(self, device: str, records: list[dict[str, Any]]) -> None:
        if len(records) > BATCH_AS_ONE_LINE:
            self._say(
                f"punches: {len(records)} from {device} in one batch ({records[0]['source']}), "
                f"local times {records[0]['local_time'][:19]} … {records[-1]['local_time'][:19]}"
            )
            return
        for r in records:
            self._say(
                f"punch: {device} user {r['user_id']} at {r['local_time'][:19]} local "
                f"({r['utc_time'][11:19]} UTC) {_name(r['state'])}/{_name(r['verify'])} "
                f"{r['source']} id {r['id'][:10]}"
            )

    def summary_line(self, produced: int) -> str:
        return (
            f"punched on terminals: {produced} · unique punches received: {len(self.ids)} · "
            f"duplicates ignored: {self.duplicates}"
        )

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
                _name(p["state"]),
                _name(p["verify"]),
                _source(p["source"]),
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
        summary = f"gateway: [bold]{self.gateway_state}[/] · {self.summary_line(produced)} · Ctrl-C to stop"
        footer = [f"[dim]{escape(self.footer)}[/]"] if self.footer else []
        return Group(devices, punches, summary, *(f"[dim]{e}[/]" for e in self.events), *footer)


def _name(field: dict[str, Any]) -> str:
    return str(field["name"] or field["code"])


def _source(source: str) -> str:
    style = SOURCE_STYLE.get(source)
    return f"[{style}]{source}[/]" if style else source


def _faults_text(state: dict[str, Any]) -> str:
    faults = [f"{f['code']} ({f['detail']})" for f in state.get("faults", [])]
    return f"faults: {'; '.join(faults)}" if faults else "no faults"


def _write_config(
    workdir: Path,
    broker_port: int,
    http_port: int,
    push_port: int,
    emulators: dict[str, ZkEmulator],
    anviz_pty: str,
) -> Path:
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
port = {http_port}

# The listener push terminals upload to (loopback here; on a site, the gateway's LAN address).
[push]
bind = "127.0.0.1"
port = {push_port}

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

# a terminal that pushes its punches to the [push] listener (ADMS), named by its serial number
[[terminals]]
type = "zk-push"
name = "{PUSH_TERMINAL}"
serial_number = "{PUSH_SERIAL}"
encoding = "gb18030"
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
    view: CentralView, produced: Callable[[], int], gateway: subprocess.Popen[bytes], console: Console
) -> None:
    """Punching has stopped: give the pipeline a moment to deliver what is in flight."""
    deadline = time.monotonic() + 10
    if not console.is_terminal:
        console.print("waiting for the last punches to arrive…")
    with console.status("waiting for the last punches to arrive…"):
        while len(view.ids) < produced() and time.monotonic() < deadline and gateway.poll() is None:
            await asyncio.sleep(0.2)


def _punchgate_command() -> str:
    """How to call `punchgate` from here: the name if PATH finds this one, else its path."""
    script = Path(sys.executable).parent / "punchgate"
    found = shutil.which("punchgate")
    if not script.exists() or (found is not None and Path(found).resolve() == script.resolve()):
        return "punchgate"
    with contextlib.suppress(ValueError):
        return str(script.absolute().relative_to(Path.cwd()))
    return str(script)


def _where_to_look(http_port: int, password: str) -> list[tuple[str, str]]:
    url = f"http://127.0.0.1:{http_port}"
    return [
        ("status page", f"{url}/  (sign in as {CONSOLE_ACCOUNT}, password {password})"),
        ("metrics", f"{url}/metrics"),
        ("status", f"{_punchgate_command()} status --url {url}"),
    ]


def _console_account(buffer: Path) -> str:
    """An admin account for the console (beside the buffer, as `punchgate user add` makes it),
    with a random password: the status page needs a sign-in. Returns the password."""
    password = secrets.token_urlsafe(12)
    Accounts.beside_buffer(buffer).add(CONSOLE_ACCOUNT, "admin", password)
    return password


async def _start_push_terminal(
    emulator: ZkPushEmulator, gateway: subprocess.Popen[bytes], log: Path, stop: asyncio.Event
) -> None:
    """Switch the push terminal on once the gateway's listener is up (`push_listening` in its
    log): a terminal that finds nobody listening waits its ErrorDelay (30 s) to try again."""
    while not stop.is_set() and gateway.poll() is None:
        with contextlib.suppress(OSError):
            if '"push_listening"' in await asyncio.to_thread(log.read_text, errors="replace"):
                await emulator.start()
                # Someone clocks in once the terminal has uploaded its backlog, so the demo
                # always shows a punch pushed as it happens, whatever the random rate does.
                while not stop.is_set() and emulator.counters.uploads == 0:
                    await asyncio.sleep(0.2)
                if not stop.is_set():
                    emulator.punch(next(iter(emulator.users), "1"))
                return
        await asyncio.sleep(0.2)


def _start_gateway(workdir: Path, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PUNCHGATE_COMM_KEY_GATE_SOUTH": str(COMM_KEY)}
    with (workdir / "gateway.log").open("ab") as gateway_log:
        return subprocess.Popen(
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


async def _show(
    view: CentralView,
    produced: Callable[[], int],
    gateway: subprocess.Popen[bytes],
    stop: asyncio.Event,
    console: Console,
    duration: float,
    log: Path,
) -> None:
    """Show what central receives until Ctrl-C, the duration, or the gateway's end: a live
    table on a terminal, otherwise one line per arrival, written (and flushed) as it comes."""
    deadline = time.monotonic() + duration if duration > 0 else None
    piped = not console.is_terminal
    live = None if piped else Live(view.render(produced()), console=console, refresh_per_second=4)
    next_progress = time.monotonic() + PROGRESS_EVERY
    with live or contextlib.nullcontext():
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if gateway.poll() is not None:
                console.print(
                    f"[red]the gateway exited with {gateway.returncode}: see {escape(str(log))}[/]",
                    soft_wrap=True,
                )
                break
            if live is not None:
                live.update(view.render(produced()))
            else:
                lines, view.lines = view.lines or [], []
                if time.monotonic() >= next_progress:
                    next_progress += PROGRESS_EVERY
                    lines.append(f"{dt.datetime.now():%H:%M:%S} progress: {view.summary_line(produced())}")
                for line in lines:
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


async def _demo(duration: float) -> int:
    console = Console()
    # Kept after exit (named at start and at the end): the logs are how one looks back.
    workdir = Path(tempfile.mkdtemp(prefix="punchgate-demo-"))
    broker = MosquittoBroker(workdir / "broker")
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
    # The push terminal keeps the time of its zone by itself (the site's zone, Berlin) and
    # punches on its own at PUSH_RATE; it posts each punch as it happens (realtime).
    push_port = free_port()
    push = ZkPushEmulator(
        f"http://127.0.0.1:{push_port}",
        PUSH_SERIAL,
        records=30,
        days=3,
        users=25,
        timezone="Europe/Berlin",
        encoding="gb18030",
        punch_rate=PUSH_RATE,
    )
    gateway: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    produced = [0]  # by the pull terminals (the push terminal's log is its own count)

    def produced_total() -> int:
        return produced[0] + len(push.records)

    view = CentralView(lines=None if console.is_terminal else [])
    kept = (
        f"kept in {workdir}: gateway.log, emulators.log, broker/, punchgate.toml, buffer.db, console/ "
        f"(delete it when done: rm -r {workdir})"
    )
    try:
        broker.start()
        for seed, emulator in enumerate(emulators.values()):
            emulator.generate_log(records=40, days=3, users=25, seed=seed)
            await emulator.start()
        for terminal in anviz:
            terminal.add_history(30)
        anviz_bus.start()
        produced[0] = sum(len(e.records) for e in emulators.values()) + sum(len(t.records) for t in anviz)
        http_port = free_port()
        config = _write_config(workdir, broker.port, http_port, push_port, emulators, anviz_bus.path)
        password = await asyncio.to_thread(_console_account, workdir / "buffer.db")
        gateway = _start_gateway(workdir, config)
        console.print(
            f"[bold]punchgate demo[/]: broker 127.0.0.1:{broker.port} · 6 emulated terminals "
            f"(one pushing to 127.0.0.1:{push_port}) · gateway pid {gateway.pid}, log {workdir / 'gateway.log'}",
            soft_wrap=True,
        )
        where_to_look = _where_to_look(http_port, password)
        for name, where in where_to_look:
            also = f"   (or --config {config})" if name == "status" else ""
            console.print(f"  {name:<12} {escape(where)}{escape(also)}", soft_wrap=True, highlight=False)
        console.print(f"  {'files':<12} {escape(kept)}", soft_wrap=True, highlight=False)
        view.footer = " · ".join(f"{name} {where}" for name, where in where_to_look)
        tasks = [
            asyncio.create_task(_subscribe(broker.port, view, stop)),
            asyncio.create_task(_punch_at_random(list(emulators.values()), stop, produced)),
            asyncio.create_task(_punch_anviz_at_random(anviz, stop, produced)),
            asyncio.create_task(_start_push_terminal(push, gateway, workdir / "gateway.log", stop)),
        ]
        await _show(view, produced_total, gateway, stop, console, duration, workdir / "gateway.log")
        punchers, subscriber = tasks[1:], tasks[0]
        for task in punchers:
            task.cancel()
        await _wait_for_last_punches(view, produced_total, gateway, console)
        stop.set()
        subscriber.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for line in view.lines or []:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print()
        console.print(
            f"stopped: {produced_total()} punches on the terminals, {len(view.ids)} unique received."
        )
        return 0 if gateway.returncode in (None, 0) else 1
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:  # in a thread: the emulators, on this loop, must answer the gateway's goodbye
                await asyncio.to_thread(gateway.wait, 15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        for emulator in emulators.values():
            with contextlib.suppress(Exception):
                await emulator.stop()
        with contextlib.suppress(Exception):
            await push.stop()
        anviz_bus.stop()
        broker.close()
        emulator_log.close()
        console.print(escape(kept), soft_wrap=True, highlight=False)


def run_demo(*, duration: float = 0) -> int:
    return asyncio.run(_demo(duration))


__all__ = ["CentralView", "run_demo"]
