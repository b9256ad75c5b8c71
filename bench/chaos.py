"""The chaos harness: does the gateway ever lose a punch while everything around it fails?

    python -m bench.chaos --minutes 2          # ./dev chaos --minutes 30 for the long run
    python -m bench.chaos --record-from report.json --dry-run   # the docs section it would write

Emulated ZK terminals (in this process, so they survive the gateway's deaths) punch at a
steady rate. The gateway runs as a child process, a real mosquitto as another, and a real
subscriber plays the central system. At random intervals the harness crashes (SIGKILL) or
restarts (SIGTERM) the broker, SIGKILLs and restarts the gateway, and makes terminals drop
connections mid-transfer, hang, reboot or answer garbage. When the time is up it lifts every
fault, lets the gateway catch up, and reconciles every punch the terminals hold against
every id the subscriber received: produced, received, lost (must be 0), duplicates.

A punch missing at the subscriber is looked up in the gateway's buffer to say where it
stopped. MQTT QoS 1 hands a message over at PUBACK: one the broker acknowledged and then lost
in its own SIGKILL (mosquitto cannot both ack and persist atomically) is the broker's loss,
reported on its own line (`lost_in_broker_crash`) with the evidence, and never hidden in
`received`. Everything else missing is `lost`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import machine
from bench.chaos_push import PushTerminals
from bench.collector import PunchCollector
from bench.results import BenchResult, Figure, render_section, save_result, write_doc
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.gateway.logs import configure_logging
from tests.support.broker import Broker
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.reconcile import delivery_marks, where_it_stopped
from tests.support.zk import expected_ids

GATEWAY_ID = "chaos-gw"


@dataclass(frozen=True)
class ChaosOptions:
    minutes: float = 2.0
    tcp_terminals: int = 6
    udp_terminals: int = 2
    punches_per_second: float = 8.0  # across all terminals
    history_records: int = 300  # each terminal's log before the run (several bulk packets)
    push_terminals: int = 0  # push terminals beside the pulled ones (bench/chaos_push.py)
    push_backlog: int = 1000  # records each push terminal uploads at start
    mean_action_interval: float = 6.0  # seconds between chaos actions, on average
    poll_interval: float = 5.0
    drain_timeout: float = 120.0
    seed: int | None = None
    workdir: Path | None = None
    keep_workdir: bool = False


@dataclass
class ChaosReport:
    produced: int = 0
    received: int = 0
    lost: int = 0
    lost_in_broker_crash: int = 0
    duplicates: int = 0
    unexpected: int = 0  # ids received that no terminal produced
    refused_by_terminal: int = 0  # punches a terminal refused (disabled during a read): not produced
    actions: Counter[str] = field(default_factory=Counter)
    gateway_starts: int = 0
    unexpected_gateway_exits: int = 0
    clean_exit_code: int | None = None
    drain_seconds: float = 0.0
    seconds: float = 0.0
    lost_detail: dict[str, str] = field(default_factory=dict)  # id -> where it stopped
    workdir: str = ""
    started_at: str = ""  # wall-clock start, UTC
    load_before: float = -1.0  # 1-minute load average (-1: not recorded)
    load_after: float = -1.0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.unexpected == 0

    def lines(self) -> list[str]:
        actions = ", ".join(f"{name} {count}" for name, count in sorted(self.actions.items())) or "none"
        out = [
            f"produced:   {self.produced}",
            f"received:   {self.received}",
            f"lost:       {self.lost}",
            f"duplicates: {self.duplicates}",
            f"unexpected ids (never produced): {self.unexpected}",
            f"lost_in_broker_crash (acknowledged by mosquitto, then it was SIGKILLed): {self.lost_in_broker_crash}",
            f"punches refused by a terminal (not produced): {self.refused_by_terminal}",
            f"chaos actions: {actions}",
            f"gateway starts: {self.gateway_starts}, unexpected exits: {self.unexpected_gateway_exits}, "
            f"exit code at the end: {self.clean_exit_code}",
            f"run {self.seconds:.0f} s, final drain {self.drain_seconds:.1f} s",
        ]
        for record_id, where in list(self.lost_detail.items())[:20]:
            out.append(f"  missing {record_id}: {where}")
        return out


@dataclass
class _Timeline:
    """What the harness did and when (wall clock, to compare with the buffer's timestamps)."""

    broker_crashes: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, action: str, detail: str = "") -> None:
        elapsed = time.monotonic() - self.started
        print(f"[chaos {elapsed:7.1f}s] {action} {detail}".rstrip(), flush=True)


class ChaosRun:
    def __init__(self, options: ChaosOptions) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.workdir = options.workdir or Path(tempfile.mkdtemp(prefix="punchgate-chaos-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Broker(self.workdir / "broker", persistent=True)
        self.emulators: dict[str, ZkEmulator] = {}
        self.push = PushTerminals(
            options.push_terminals, backlog=options.push_backlog, seed=options.seed or 0
        )
        self.gateway: GatewayProcess | None = None
        self.collector: PunchCollector | None = None
        self.report = ChaosReport(workdir=str(self.workdir))
        self.timeline = _Timeline()
        self._broker_lock = asyncio.Lock()
        self._gateway_lock = asyncio.Lock()

    # --- set-up ----------------------------------------------------------------------------
    async def _start_emulators(self) -> None:
        opts = self.options
        kinds = ["tcp"] * opts.tcp_terminals + ["udp"] * opts.udp_terminals
        for n, kind in enumerate(kinds, start=1):
            name = f"t{n:02d}-{kind}"
            emulator = ZkEmulator(
                profile="tft" if kind == "tcp" else "bw",
                serial_number=f"CHAOS{n:05d}",
                transports=(kind,),  # type: ignore[arg-type]
                session_timeout=5.0,  # a UDP session of a SIGKILLed gateway frees the slot soon
                restart_downtime=1.0,
                name=name,
            )
            emulator.generate_log(records=opts.history_records, days=5, users=300, seed=n)
            await emulator.start()
            self.emulators[name] = emulator

    def _write_config(self) -> Path:
        terminals = [
            zk_terminal(
                name,
                emulator,
                transport="tcp" if "tcp" in emulator.transports else "udp",
                poll_interval=self.options.poll_interval,
                live=True,
                timeout=3.0,
            )
            for name, emulator in self.emulators.items()
        ]
        push_terminals, sections = self.push.config()
        return write_config(
            self.workdir / "punchgate.toml",
            gateway_id=GATEWAY_ID,
            broker_port=self.broker.port,
            buffer_path=self.workdir / "buffer.db",
            terminals=[*terminals, *push_terminals],
            mqtt=self._mqtt_settings(),
            sections=sections,
        )

    def _mqtt_settings(self) -> dict[str, Any]:
        """The gateway's [mqtt] section: quick reconnects, so the chaos is felt, not waited out."""
        return {"reconnect_min": 0.3, "reconnect_max": 2.0, "publish_timeout": 5.0, "keepalive": 5}

    # --- the steady load ---------------------------------------------------------------------
    async def _punch(self, stop: asyncio.Event) -> None:
        """Round-robin over the terminals at a steady total rate; each user in turn (no repeats)."""
        interval = 1.0 / self.options.punches_per_second
        terminals: list[ZkEmulator | ZkPushEmulator] = [
            *self.emulators.values(),
            *self.push.emulators.values(),
        ]
        turn = 0
        next_at = time.monotonic()
        while not stop.is_set():
            emulator = terminals[turn % len(terminals)]
            user = str(1 + (turn // len(terminals)) % 300)
            state, verify = turn % 2, (1, 15, 2)[turn % 3]
            if isinstance(emulator, ZkPushEmulator):
                emulator.punch(user, state=state, verify=verify)  # uploaded in real time, or kept
            elif emulator.add_punch(user, state=state, verify=verify) is None:
                self.report.refused_by_terminal += 1
            turn += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # --- chaos -------------------------------------------------------------------------------
    def _actions(self) -> tuple[tuple[Callable[[], Coroutine[Any, Any, None]], int], ...]:
        """The chaos actions and their weights (bench/chaos_central.py has its own)."""
        return (
            (self._broker_crash, 2),
            (self._broker_restart, 2),
            (self._gateway_kill, 3),
            (self._terminal_drop_mid_transfer, 2),
            (self._terminal_hang, 2),
            (self._terminal_reboot, 2),
            (self._terminal_garbage, 1),
        )

    async def _chaos(self, stop: asyncio.Event) -> None:
        actions = self._actions()
        # Every kind once first (in random order), so even a short run exercises them all.
        deck = [a for a, _ in actions]
        self.rng.shuffle(deck)
        pending: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    delay = self.rng.expovariate(1.0 / self.options.mean_action_interval)
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
                if deck:
                    action = deck.pop()
                else:
                    action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
                task = asyncio.create_task(action())  # actions overlap, as real failures do
                pending.add(task)
                task.add_done_callback(pending.discard)
        finally:
            # Outages in progress finish (the broker and gateway come back), then faults lift.
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _broker_crash(self) -> None:
        await self._broker_outage(kill=True)

    async def _broker_restart(self) -> None:
        await self._broker_outage(kill=False)

    async def _broker_outage(self, *, kill: bool) -> None:
        async with self._broker_lock:  # outages queue up rather than overlap
            downtime = self.rng.uniform(0.5, 6.0)
            name = "broker_crash" if kill else "broker_restart"
            self.report.actions[name] += 1
            self.timeline.note(
                name, f"(SIGKILL, down {downtime:.1f} s)" if kill else f"(down {downtime:.1f} s)"
            )
            if kill:
                self.timeline.broker_crashes.append(time.time())
            await asyncio.to_thread(self.broker.kill if kill else self.broker.stop)
            await asyncio.sleep(downtime)
            await asyncio.to_thread(self.broker.start)

    async def _gateway_kill(self) -> None:
        assert self.gateway is not None
        async with self._gateway_lock:
            downtime = self.rng.uniform(0.2, 4.0)
            self.report.actions["gateway_sigkill"] += 1
            self.timeline.note("gateway_sigkill", f"(down {downtime:.1f} s)")
            await asyncio.to_thread(self.gateway.kill)
            await asyncio.sleep(downtime)
            self.gateway.start(ready_timeout=None)  # it comes up while the chaos goes on

    def _pick_terminal(self) -> ZkEmulator:
        # One fault at a time per terminal keeps the timeline readable.
        healthy = [name for name, e in sorted(self.emulators.items()) if not e.active_faults]
        return self.emulators[self.rng.choice(healthy or sorted(self.emulators))]

    async def _terminal_fault(self, fault: str, seconds: float, **params: object) -> None:
        emulator = self._pick_terminal()
        self.report.actions[f"terminal_{fault}"] += 1
        self.timeline.note(f"terminal_{fault}", f"{emulator.name} for {seconds:.1f} s {params or ''}")
        await emulator.set_fault(fault, **params)  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
        await emulator.clear_fault(fault)  # type: ignore[arg-type]

    async def _terminal_drop_mid_transfer(self) -> None:
        await self._terminal_fault(
            "drop_mid_transfer", self.rng.uniform(4, 15), after_packets=self.rng.randint(1, 3)
        )

    async def _terminal_hang(self) -> None:
        await self._terminal_fault("hang", self.rng.uniform(3, 10))

    async def _terminal_garbage(self) -> None:
        await self._terminal_fault("garbage_replies", self.rng.uniform(2, 6), count=self.rng.randint(1, 3))

    async def _terminal_reboot(self) -> None:
        emulator = self._pick_terminal()
        silent = self.rng.random() < 0.5
        downtime = self.rng.uniform(0, 3)
        self.report.actions["terminal_reboot"] += 1
        how = "TCP left half-open" if silent else "connection dropped"
        self.timeline.note("terminal_reboot", f"{emulator.name} ({how}, down {downtime:.1f} s)")
        await emulator.set_fault("restart", silent=silent, downtime=downtime)

    async def _watch_gateway(self, stop: asyncio.Event) -> None:
        """A gateway that dies without being killed is a finding: count it, restart it."""
        assert self.gateway is not None
        while not stop.is_set():
            await asyncio.sleep(0.5)
            if self._gateway_lock.locked():
                continue
            code = self.gateway.exited()
            if code is not None:
                self.report.unexpected_gateway_exits += 1
                self.timeline.note("gateway_exited_by_itself", f"code {code}; restarting")
                self.gateway.start(ready_timeout=None)

    # --- the run -------------------------------------------------------------------------------
    async def run(self) -> ChaosReport:
        opts = self.options
        started = time.monotonic()
        self.report.started_at = machine.describe()["date"]
        self.report.load_before = machine.load_average()
        try:
            await self._start_emulators()
            await asyncio.to_thread(self.broker.start)
            await self._start_receiver()
            self.gateway = GatewayProcess(self._write_config(), log_path=self.workdir / "gateway.log")
            self.gateway.start(ready_timeout=None)
            await self.push.start()
            self.timeline.note(
                "started",
                f"{self.mode}{len(self.emulators)} terminals and {len(self.push.emulators)} push terminals, "
                f"{opts.punches_per_second}/s, {opts.minutes} min, "
                f"workdir {self.workdir}",
            )
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(self._punch(stop)),
                asyncio.create_task(self._chaos(stop)),
                *(asyncio.create_task(watch) for watch in self._watchers(stop)),
            ]
            await asyncio.sleep(opts.minutes * 60)
            stop.set()
            await asyncio.gather(*tasks)
            self.timeline.note("chaos_over", f"faults lifted; waiting for {self.caught_up}")
            await self._drain()
            self.report.gateway_starts = self.gateway.starts
            await self._before_stop()
            try:
                self.report.clean_exit_code = await asyncio.to_thread(self.gateway.stop)
            except subprocess.TimeoutExpired:
                self.timeline.note("gateway_stop_timeout", "no exit 30 s after SIGTERM; SIGKILLed")
            self._reconcile()
        finally:
            self.report.seconds = time.monotonic() - started
            self.report.load_after = machine.load_average()
            await self._teardown()
        return self.report

    # What a variant of the run (bench/chaos_central.py) changes.
    mode = ""  # said first in the "started" line
    caught_up = "the gateway to catch up"  # what the end of the chaos waits for

    async def _start_receiver(self) -> None:
        """Start what receives the stream: here a subscriber with a persistent session."""
        self.collector = await asyncio.to_thread(
            PunchCollector(self.broker.port, GATEWAY_ID, persistent=True).start
        )

    def _watchers(self, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        """Tasks that restart what dies unasked until `stop`, noting it."""
        return [self._watch_gateway(stop)]

    async def _before_stop(self) -> None:
        """Figures to take from the running gateway, after the drain and before its stop."""

    def _expected(self) -> set[str]:
        expected: set[str] = set()
        for emulator in self.emulators.values():
            expected.update(expected_ids(emulator))
        return expected | self.push.expected_ids()

    async def _drain(self) -> None:
        assert self.collector is not None
        expected = self._expected()
        began = time.monotonic()
        deadline = began + self.options.drain_timeout
        settled_since: float | None = None
        while time.monotonic() < deadline:
            missing = expected - self.collector.snapshot().keys()
            if not missing:
                break
            # Missing ids the gateway has already handed over (marked delivered) will not come
            # again: once that holds for a few seconds, waiting longer proves nothing.
            try:
                rows = await asyncio.to_thread(delivery_marks, self.workdir / "buffer.db", missing)
            except sqlite3.Error:
                rows = {}  # busy for a moment: ask again next round
            handed_over = len(rows) == len(missing) and all(at is not None for at in rows.values())
            if not handed_over:
                settled_since = None
            elif settled_since is None:
                settled_since = time.monotonic()
            elif time.monotonic() - settled_since > 5.0:
                break
            await asyncio.sleep(0.5)
        self.report.drain_seconds = time.monotonic() - began

    def _reconcile(self) -> None:
        assert self.collector is not None
        expected = self._expected()
        received = self.collector.snapshot()
        report = self.report
        report.produced = len(expected)
        report.received = len(expected & received.keys())
        report.unexpected = len(received.keys() - expected)
        report.duplicates = self.collector.duplicates
        missing = expected - received.keys()
        buffered = delivery_marks(self.workdir / "buffer.db", missing)
        for record_id in sorted(missing):
            where = where_it_stopped(
                record_id in buffered, buffered.get(record_id), self.timeline.broker_crashes
            )
            if where.startswith("acknowledged by the broker"):
                report.lost_in_broker_crash += 1
            else:
                report.lost += 1
            report.lost_detail[record_id] = where

    async def _teardown(self) -> None:
        if self.collector is not None:
            await asyncio.to_thread(self.collector.stop)
        if self.gateway is not None:
            await asyncio.to_thread(self.gateway.kill)
        await asyncio.to_thread(self.broker.stop)
        await self.push.stop()
        for emulator in self.emulators.values():
            with contextlib.suppress(Exception):
                await emulator.stop()
        if not self.options.keep_workdir and self.report.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)


def record_result(report: ChaosReport, *, minutes: float, command: str, dry_run: bool = False) -> None:
    """Keep this run's figures in bench/results.json and refresh docs/performance.md (dry run:
    print the section it would write, touch nothing)."""
    result = BenchResult(name="chaos", title=f"chaos: {minutes:g} minutes", command=command)
    actions = ", ".join(f"{name} {count}" for name, count in sorted(report.actions.items()))
    result.details = [
        f"chaos actions: {actions}",
        f"gateway started {report.gateway_starts} times (unexpected exits: {report.unexpected_gateway_exits}); "
        f"exit code on the final SIGTERM: {report.clean_exit_code}; final drain {report.drain_seconds:.1f} s",
        f"lost in a broker crash (acknowledged by mosquitto just before its SIGKILL): {report.lost_in_broker_crash}; "
        f"ids received that no terminal produced: {report.unexpected}; "
        f"punches refused by a terminal: {report.refused_by_terminal}",
    ]
    result.figures = [
        *arrival_figures(report, "received by the subscriber", report.received),
        of_produced(report, "duplicates received", report.duplicates, "records"),
    ]
    keep_result(result, report, dry_run=dry_run)


def of_produced(report: ChaosReport, name: str, value: int, unit: str, **goal: Any) -> Figure:
    """A figure with its share of the punches produced."""
    return Figure(
        name,
        value,
        unit,
        versus="produced",
        versus_value=report.produced,
        ratio=value / max(report.produced, 1),
        **goal,
    )


def arrival_figures(report: ChaosReport, arrived_as: str, arrived: int) -> list[Figure]:
    """Produced, arrived (received, or stored at central) and lost: what every chaos run reports."""
    return [
        Figure("punches produced on the terminals", report.produced, "punches"),
        of_produced(report, arrived_as, arrived, "punches"),
        of_produced(report, "lost", report.lost, "punches", goal="0", met=report.lost == 0),
    ]


def keep_result(result: BenchResult, report: ChaosReport, *, dry_run: bool) -> None:
    """Put the run's time, load and date on `result`, then record it (dry run: print it)."""
    result.seconds = report.seconds
    result.load_before, result.load_after = report.load_before, report.load_after
    if report.started_at:
        result.machine["date"] = report.started_at
    if dry_run:
        print(render_section(result))
        return
    save_result(result)
    write_doc()


def report_from_json(path: Path) -> ChaosReport:
    data = json.loads(path.read_text())
    data["actions"] = Counter(data.get("actions", {}))
    return ChaosReport(**data)


async def run_chaos(options: ChaosOptions) -> ChaosReport:
    return await ChaosRun(options).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the chaos lasts (default 2)")
    parser.add_argument("--rate", type=float, default=8.0, help="punches per second, all terminals")
    parser.add_argument("--tcp-terminals", type=int, default=6)
    parser.add_argument("--udp-terminals", type=int, default=2)
    parser.add_argument(
        "--push-terminals", type=int, default=0, help="push terminals too, each uploading a backlog at start"
    )
    parser.add_argument("--interval", type=float, default=6.0, help="mean seconds between chaos actions")
    parser.add_argument(
        "--central",
        action="store_true",
        help="central delivery: broker without persistence, the sink into PostgreSQL, sink and "
        "PostgreSQL crashes too (bench/chaos_central.py)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--record", action="store_true", help="record the result in docs/performance.md")
    parser.add_argument(
        "--record-from", type=Path, default=None, help="record a finished run's --json report, run nothing"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --record or --record-from: print the docs section instead of writing any file",
    )
    args = parser.parse_args(argv)
    command = f"python -m bench.chaos --minutes {args.minutes:g}" + (" --central" if args.central else "")
    if args.central and args.record_from is not None:
        from bench.chaos_central import central_report_from_json, record_central_result

        central = central_report_from_json(args.record_from)
        record_central_result(central, minutes=args.minutes, command=command, dry_run=args.dry_run)
        print("\n".join(central.lines()))
        return 0 if central.ok else 1
    if args.record_from is not None:
        report = report_from_json(args.record_from)
        record_result(report, minutes=args.minutes, command=command, dry_run=args.dry_run)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="punchgate-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # The emulators' session logs go to a file: the screen is for the timeline and the report.
    emulator_log = (workdir / "emulators.log").open("a", encoding="utf-8")
    configure_logging("info", stream=emulator_log, json=True)
    options = ChaosOptions(
        minutes=args.minutes,
        punches_per_second=args.rate,
        tcp_terminals=args.tcp_terminals,
        udp_terminals=args.udp_terminals,
        push_terminals=args.push_terminals,
        mean_action_interval=args.interval,
        seed=args.seed,
        workdir=workdir,
        keep_workdir=args.workdir is not None,
    )
    try:
        if args.central:
            from bench.chaos_central import record_central_result, run_central_chaos

            central = asyncio.run(run_central_chaos(options))
            report = central
        else:
            report = asyncio.run(run_chaos(options))
    finally:
        emulator_log.close()
    print("\n".join(report.lines()))
    if args.record and args.central:
        record_central_result(central, minutes=args.minutes, command=command, dry_run=args.dry_run)
    elif args.record:
        record_result(report, minutes=args.minutes, command=command, dry_run=args.dry_run)
    if args.json is not None:
        data = dataclasses.asdict(report)
        data["actions"] = dict(report.actions)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if not report.ok:
        print(f"FAILED: punches lost or unexpected; files kept in {report.workdir}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
