"""The chaos harness in central delivery (`python -m bench.chaos --central`, `./dev chaos --central`).

The same terminals, steady punching and terminal faults as `bench/chaos.py`, with central
delivery end to end: the gateway (`mqtt.delivery = "central"`) publishes to a mosquitto that
runs *without persistence*, the reference sink (`punchgate sink run`, its own process) stores
into a real PostgreSQL and confirms, and only a confirmation delivers a punch at the gateway.
At random the harness SIGKILLs the broker (every message it acknowledged and had not handed on
is gone, and the sink's session with it), SIGKILLs the gateway, SIGKILLs the sink, and crashes
PostgreSQL (`pg_ctl stop -m immediate`, then a start with crash recovery).

Nothing the broker loses may be lost here: the gateway sends again whatever nobody confirmed
within `resend_after`. At the end every fault is lifted and the harness waits until PostgreSQL
holds every punch the terminals produced and the gateway's buffer has nothing unconfirmed; it
reports produced, stored, lost (must be 0), rows stored twice (must be 0: the table's key is
the record id), ids nobody produced, and how many punches the gateway sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.chaos import ChaosOptions, ChaosReport, ChaosRun, arrival_figures, keep_result, of_produced
from bench.results import BenchResult, Figure
from punchgate.sync.sink import db
from tests.support.broker import Broker
from tests.support.gateway import log_events
from tests.support.postgres import Postgres
from tests.support.reconcile import delivery_marks, pending_count
from tests.support.sink import SinkProcess

# Short against the default 120 s, so a punch the broker lost comes again within the run
# (a central system that stays away still backs the gateway off, up to 8 times this).
RESEND_AFTER = 10.0
SINK_CONNECT_TIMEOUT = 60.0


@dataclass
class CentralChaosReport(ChaosReport):
    stored: int = 0  # expected punches found in PostgreSQL
    duplicate_rows: int = 0  # rows beyond one per id in PostgreSQL (the key forbids them)
    resent: int = 0  # punches the gateway sent again for want of a confirmation
    sink_starts: int = 0
    sink_unexpected_exits: int = 0  # restarted as systemd would; a sink waits for a down PostgreSQL
    unconfirmed_at_end: int = -1  # rows the gateway still held unconfirmed (-1: not read)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.unexpected == 0
            and self.duplicate_rows == 0
            and self.unconfirmed_at_end == 0
        )

    def lines(self) -> list[str]:
        actions = ", ".join(f"{name} {count}" for name, count in sorted(self.actions.items())) or "none"
        out = [
            f"produced:                 {self.produced}",
            f"stored in PostgreSQL:     {self.stored}",
            f"lost:                     {self.lost}",
            f"rows stored twice:        {self.duplicate_rows}",
            f"unexpected ids (never produced): {self.unexpected}",
            f"unconfirmed at the gateway at the end: {self.unconfirmed_at_end}",
            f"punches re-sent by the gateway (no confirmation within {RESEND_AFTER:g} s or more): {self.resent}",
            f"punches refused by a terminal (not produced): {self.refused_by_terminal}",
            f"chaos actions: {actions}",
            f"gateway starts: {self.gateway_starts}, unexpected exits: {self.unexpected_gateway_exits}, "
            f"exit code at the end: {self.clean_exit_code}; sink starts: {self.sink_starts} "
            f"(exits by itself: {self.sink_unexpected_exits})",
            f"run {self.seconds:.0f} s, final drain (all stored and confirmed) {self.drain_seconds:.1f} s",
        ]
        for record_id, where in list(self.lost_detail.items())[:20]:
            out.append(f"  missing {record_id}: {where}")
        return out


def _pg_ids(url: str) -> list[str] | None:
    """Every id in the sink's table (None: PostgreSQL is not answering right now)."""
    with (
        contextlib.suppress(psycopg.OperationalError, psycopg.errors.UndefinedTable),
        psycopg.connect(url, connect_timeout=5) as conn,
    ):
        return [row[0] for row in conn.execute("SELECT id FROM punches")]
    return None


class CentralChaosRun(ChaosRun):
    def __init__(self, options: ChaosOptions) -> None:
        super().__init__(options)
        self.central = CentralChaosReport(workdir=str(self.workdir))
        self.report = self.central  # what the shared parts (punching, faults) count into
        # No persistence: a SIGKILL loses whatever it held, which central delivery must survive.
        self.broker = Broker(self.workdir / "broker", persistent=False)
        self.postgres: Postgres | None = None
        self.sink: SinkProcess | None = None
        self.pg_url = ""
        self._sink_lock = asyncio.Lock()
        self._postgres_lock = asyncio.Lock()

    def _mqtt_settings(self) -> dict[str, Any]:
        return {"delivery": "central", "resend_after": RESEND_AFTER, **super()._mqtt_settings()}

    # --- chaos ---------------------------------------------------------------------------------
    def _actions(self) -> tuple[tuple[Callable[[], Coroutine[Any, Any, None]], int], ...]:
        return (
            (self._broker_crash, 3),
            (self._gateway_kill, 3),
            (self._sink_kill, 3),
            (self._postgres_crash, 2),
            (self._terminal_drop_mid_transfer, 1),
            (self._terminal_hang, 1),
            (self._terminal_reboot, 1),
        )

    async def _sink_kill(self) -> None:
        assert self.sink is not None
        async with self._sink_lock:
            downtime = self.rng.uniform(0.5, 4.0)
            self.report.actions["sink_sigkill"] += 1
            self.timeline.note("sink_sigkill", f"(down {downtime:.1f} s)")
            await asyncio.to_thread(self.sink.kill)
            await asyncio.sleep(downtime)
            self.sink.start()

    async def _postgres_crash(self) -> None:
        assert self.postgres is not None
        async with self._postgres_lock:
            downtime = self.rng.uniform(0.5, 4.0)
            self.report.actions["postgres_crash"] += 1
            self.timeline.note("postgres_crash", f"(stop -m immediate, down {downtime:.1f} s)")
            await asyncio.to_thread(self.postgres.kill)
            await asyncio.sleep(downtime)
            await asyncio.to_thread(self.postgres.start)

    async def _watch_sink(self, stop: asyncio.Event) -> None:
        """A sink that dies without being killed is a finding too: note it, restart it."""
        assert self.sink is not None
        while not stop.is_set():
            await asyncio.sleep(0.5)
            if self._sink_lock.locked() or self.sink.running:
                continue
            self.central.sink_unexpected_exits += 1
            self.timeline.note("sink_exited_by_itself", "restarting")
            self.sink.start()

    # --- the run -------------------------------------------------------------------------------
    async def _start_central(self) -> None:
        self.postgres = await asyncio.to_thread(Postgres().start)
        self.pg_url = await asyncio.to_thread(self.postgres.create_database, "chaos")
        engine = db.create(self.pg_url)
        await asyncio.to_thread(db.upgrade, engine)
        engine.dispose()
        self.sink = SinkProcess(
            broker_port=self.broker.port,
            db=self.pg_url,
            client_id="chaos-sink",
            log=self.workdir / "sink.log",
        ).start()
        deadline = time.monotonic() + SINK_CONNECT_TIMEOUT
        while not self.sink.connected():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sink did not connect: {self.sink.output()[-2000:]}")
            await asyncio.sleep(0.1)

    mode = "central delivery; "
    caught_up = "every punch stored and confirmed"

    async def _start_receiver(self) -> None:
        await self._start_central()

    def _watchers(self, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        return [*super()._watchers(stop), self._watch_sink(stop)]

    async def _before_stop(self) -> None:
        self.central.sink_starts = self.sink.starts if self.sink else 0
        # Before the stop: the figure is what the running gateway held unconfirmed.
        self.central.unconfirmed_at_end = await asyncio.to_thread(pending_count, self.workdir / "buffer.db")

    async def _drain(self) -> None:
        expected = self._expected()
        began = time.monotonic()
        deadline = began + self.options.drain_timeout
        while time.monotonic() < deadline:
            ids = await asyncio.to_thread(_pg_ids, self.pg_url)
            if ids is not None and expected <= set(ids):
                try:
                    if await asyncio.to_thread(pending_count, self.workdir / "buffer.db") == 0:
                        break
                except sqlite3.Error:
                    pass  # busy for a moment: ask again next round
            await asyncio.sleep(0.5)
        self.report.drain_seconds = time.monotonic() - began

    def _reconcile(self) -> None:
        expected = self._expected()
        ids = _pg_ids(self.pg_url) or []
        stored = set(ids)
        report = self.central
        report.produced = len(expected)
        report.stored = len(expected & stored)
        report.duplicate_rows = len(ids) - len(stored)
        report.unexpected = len(stored - expected)
        report.resent = sum(
            int(e.get("punches", 0)) for e in log_events(self.workdir / "gateway.log", "central_resend")
        )
        missing = expected - stored
        buffered = delivery_marks(self.workdir / "buffer.db", missing)
        for record_id in sorted(missing):
            report.lost += 1
            if record_id not in buffered:
                report.lost_detail[record_id] = "never stored by the gateway"
            elif buffered[record_id] is None:
                report.lost_detail[record_id] = "stored, still unconfirmed at the gateway"
            else:
                report.lost_detail[record_id] = "confirmed at the gateway, yet not in PostgreSQL"

    async def _teardown(self) -> None:
        if self.sink is not None:
            await asyncio.to_thread(self.sink.stop)
        await super()._teardown()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.destroy)


async def run_central_chaos(options: ChaosOptions) -> CentralChaosReport:
    # The drain may wait out a re-send backoff (up to 8 × RESEND_AFTER) after the last fault.
    run = CentralChaosRun(dataclasses.replace(options, drain_timeout=max(options.drain_timeout, 300.0)))
    await run.run()
    return run.central


def record_central_result(
    report: CentralChaosReport, *, minutes: float, command: str, dry_run: bool = False
) -> None:
    """Keep this run's figures in bench/results.json (`chaos_central`) and refresh
    docs/performance.md (dry run: print the section it would write, touch nothing)."""
    result = BenchResult(
        name="chaos_central", title=f"chaos in central delivery: {minutes:g} minutes", command=command
    )
    actions = ", ".join(f"{name} {count}" for name, count in sorted(report.actions.items()))
    result.details = [
        f"chaos actions: {actions}",
        "mosquitto without persistence (a SIGKILL loses what it acknowledged and had not delivered, "
        f"and the sink's session); the gateway re-sends what is not confirmed within {RESEND_AFTER:g} s "
        "(doubling while nothing is confirmed); PostgreSQL crashed by `pg_ctl stop -m immediate`",
        f"gateway started {report.gateway_starts} times (unexpected exits: {report.unexpected_gateway_exits}); "
        f"sink started {report.sink_starts} times (it exited by itself {report.sink_unexpected_exits} times; "
        f"one started while PostgreSQL is down waits for it); exit code on the final SIGTERM: {report.clean_exit_code}; "
        f"every punch stored and confirmed {report.drain_seconds:.1f} s after the chaos ended",
        f"unconfirmed at the gateway at the end: {report.unconfirmed_at_end}; ids in PostgreSQL that no "
        f"terminal produced: {report.unexpected}; punches refused by a terminal: {report.refused_by_terminal}",
    ]
    result.figures = [
        *arrival_figures(report, "stored in PostgreSQL", report.stored),
        Figure("rows stored twice", report.duplicate_rows, "rows", goal="0", met=report.duplicate_rows == 0),
        of_produced(report, "punches re-sent by the gateway", report.resent, "punches"),
    ]
    keep_result(result, report, dry_run=dry_run)


def central_report_from_json(path: Path) -> CentralChaosReport:
    data = json.loads(path.read_text())
    data["actions"] = Counter(data.get("actions", {}))
    return CentralChaosReport(**data)
