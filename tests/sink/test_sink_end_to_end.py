"""`punchgate sink` end to end with real parts: mosquitto, Debian's PostgreSQL (a throwaway
cluster on a free loopback port), the daemon in central delivery reading emulated ZK terminals,
and sink processes.

Every punch the terminals hold lands in PostgreSQL exactly once by id and is confirmed at the
gateway; a sink killed with SIGKILL in the middle of the stream loses nothing (its session and
the gateway's re-sends bring everything back); two sinks in one shared-subscription group split
the stream; a bad payload goes to the dead-letter table; `punchgate sink check` compares the
gateways' digests with the tables and names the day that differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.health.rig import http_get
from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import REPO, GatewayProcess
from tests.support.sink import SinkProcess
from tests.support.zk import expected_ids

CENTRAL = {"delivery": "central", "resend_after": 3, "batch_size": 100, "digest_interval": 1}


def pg_ids(url: str) -> list[str]:
    """Every id in the sink's punches table (a list: a repeat would show)."""
    try:
        with psycopg.connect(url) as conn:
            return [row[0] for row in conn.execute("SELECT id FROM punches")]
    except psycopg.errors.UndefinedTable:
        return []


def unconfirmed_in(buffer: Path) -> int:
    """Punches the gateway holds that no confirmation delivered yet."""
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM punches WHERE delivered_at IS NULL").fetchone()[0])


def sink_metric(sink: SinkProcess, name: str) -> float:
    status, body = http_get(f"http://127.0.0.1:{sink.http_port}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise KeyError(name)


def emulator_with(serial: str, records: int, seed: int) -> ZkEmulator:
    emulator = ZkEmulator(serial_number=serial, transports=("tcp",))
    emulator.generate_log(records=records, days=3, users=30, seed=seed)
    emulator.add_user("42")
    return emulator


def add_punches(emulator: ZkEmulator, count: int) -> None:
    start = dt.datetime.now().replace(microsecond=0) - dt.timedelta(hours=1)
    for n in range(count):
        emulator.add_punch("42", when=start + dt.timedelta(seconds=n), state=n % 2, verify=1)


async def test_every_punch_lands_once_confirmed_also_across_a_sink_crash(
    gateway_factory: Callable[..., GatewayProcess],
    sink_factory: Callable[..., SinkProcess],
    pg_url: str,
    tmp_path: Path,
) -> None:
    buffer = tmp_path / "buffer.db"
    emulator = emulator_with("SN-SINK-1", 2000, seed=11)
    await emulator.start()
    sink = sink_factory(pg_url).start()
    gateway = gateway_factory(
        [zk_terminal("door-1", emulator, poll_interval=1, live=False, timeout=5)], mqtt=CENTRAL
    )
    producing = asyncio.Event()

    async def terminal_keeps_punching() -> None:
        start = dt.datetime.now().replace(microsecond=0) - dt.timedelta(hours=2)
        for n in range(400):  # 20 punches a second for 20 s
            emulator.add_punch("42", when=start + dt.timedelta(seconds=n), state=n % 2, verify=1)
            if n == 40:
                producing.set()
            await asyncio.sleep(0.05)

    try:
        await gateway.wait_until_async(sink.connected, timeout=30, message=sink.output)
        gateway.start()
        backlog = set(expected_ids(emulator))
        await gateway.wait_until_async(
            lambda: set(pg_ids(pg_url)) >= backlog, timeout=60, message="the backlog in PostgreSQL"
        )
        producer = asyncio.create_task(terminal_keeps_punching())
        await producing.wait()
        await gateway.wait_until_async(
            lambda: len(pg_ids(pg_url)) > len(backlog), timeout=30, message="live punches in PostgreSQL"
        )
        sink.kill()  # mid-stream: the terminal goes on punching, the gateway goes on sending
        assert not producer.done()
        await asyncio.sleep(2)
        sink.start()
        await producer
        everything = set(expected_ids(emulator))
        assert len(everything) == len(backlog) + 400
        await gateway.wait_until_async(
            lambda: set(pg_ids(pg_url)) == everything and unconfirmed_in(buffer) == 0,
            timeout=120,
            message=lambda: (
                f"{len(everything - set(pg_ids(pg_url)))} missing, {unconfirmed_in(buffer)} unconfirmed"
            ),
        )
        ids = pg_ids(pg_url)
        assert len(ids) == len(set(ids)) == len(everything)
        assert sink_metric(sink, "punchgate_sink_confirmed_ids_total") > 0
        assert sink.stop() == 0
        # Digests, states and events made it too.
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM device_states").fetchone() == (1,)
            assert conn.execute("SELECT state FROM gateway_states").fetchone() == ("online",)
            assert conn.execute("SELECT count(*) FROM digest_windows").fetchone() == (1,)
    finally:
        await emulator.stop()


async def test_two_sinks_in_one_group_split_the_stream_and_bad_payloads_are_dead_letters(
    gateway_factory: Callable[..., GatewayProcess],
    sink_factory: Callable[..., SinkProcess],
    broker: Broker,
    pg_url: str,
    tmp_path: Path,
) -> None:
    buffer = tmp_path / "buffer.db"
    emulators = [emulator_with(f"SN-SPLIT-{n}", 1500, seed=20 + n) for n in range(2)]
    for emulator in emulators:
        await emulator.start()
    sinks = [sink_factory(pg_url, client_id=f"sink-{n}").start() for n in range(2)]
    gateway = gateway_factory(
        [
            zk_terminal(f"door-{n}", e, poll_interval=1, live=False, timeout=5)
            for n, e in enumerate(emulators)
        ],
        mqtt={**CENTRAL, "batch_size": 50},
    )
    try:
        for sink in sinks:
            await gateway.wait_until_async(sink.connected, timeout=30, message=sink.output)
        gateway.start()
        everything = {i for e in emulators for i in expected_ids(e)}
        await gateway.wait_until_async(
            lambda: set(pg_ids(pg_url)) == everything and unconfirmed_in(buffer) == 0,
            timeout=120,
            message=lambda: f"{len(everything - set(pg_ids(pg_url)))} missing",
        )
        stored = [sink_metric(s, "punchgate_sink_punches_new_total") for s in sinks]
        assert all(n > 0 for n in stored) and sum(stored) == len(everything), stored

        # A batch that is not one: stored as a dead letter with the reason, the sink goes on.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad-publisher")
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.publish(
            "punchgate/gw-test/devices/door-0/punches", b'{"schema": "punchgate.punches"}', qos=1
        ).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()

        def dead_letters() -> list[tuple[str, str]]:
            with psycopg.connect(pg_url) as conn:
                return [(r[0], r[1]) for r in conn.execute("SELECT topic, reason FROM dead_letters")]

        await gateway.wait_until_async(
            lambda: len(dead_letters()) == 1, timeout=30, message="the dead letter"
        )
        ((topic, reason),) = dead_letters()
        assert topic.endswith("door-0/punches") and "punch-batch" in reason
        assert all(s.running for s in sinks)
    finally:
        for emulator in emulators:
            await emulator.stop()


def sink_check(db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", "sink", "check", "--db", db],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip


async def test_on_sqlite_by_default_and_check_names_the_day_that_differs(
    gateway_factory: Callable[..., GatewayProcess], sink_factory: Callable[..., SinkProcess], tmp_path: Path
) -> None:
    db = str(tmp_path / "central.db")
    emulator = emulator_with("SN-CHECK", 200, seed=3)
    await emulator.start()
    sink = sink_factory(db).start()
    gateway = gateway_factory(
        [zk_terminal("door-1", emulator, poll_interval=1, live=False, timeout=5)], mqtt=CENTRAL
    )
    try:
        await gateway.wait_until_async(sink.connected, timeout=30, message=sink.output)
        gateway.start()
        everything = set(expected_ids(emulator))

        def stored() -> set[str]:
            with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
                return {r[0] for r in conn.execute("SELECT id FROM punches")}

        await gateway.wait_until_async(
            lambda: stored() == everything and unconfirmed_in(tmp_path / "buffer.db") == 0,
            timeout=60,
            message="every punch in the SQLite file",
        )
        await gateway.wait_until_async(
            lambda: sink_check(db).returncode == 0, timeout=30, message=lambda: sink_check(db).stdout
        )
        assert sink.stop() == 0
        report = sink_check(db)
        assert report.stdout.startswith("checked ") and ": 0 differ" in report.stdout

        # One punch goes missing at central: the check names gateway, terminal and day.
        with contextlib.closing(sqlite3.connect(db)) as conn:
            victim, day = conn.execute("SELECT id, local_day FROM punches LIMIT 1").fetchone()
            conn.execute("DELETE FROM punches WHERE id = ?", (victim,))
            conn.commit()
        report = sink_check(db)
        assert report.returncode == 1, report.stdout + report.stderr
        assert (
            f"gateway gw-test, terminal door-1, {day}" in report.stdout
            and "1 missing at central" in report.stdout
        )
    finally:
        await emulator.stop()


@pytest.mark.long
async def test_chaos_in_central_mode_loses_nothing(
    gateway_factory: Callable[..., GatewayProcess],
    sink_factory: Callable[..., SinkProcess],
    broker: Broker,
    postgres_server: object,
    pg_url: str,
    tmp_path: Path,
) -> None:
    """The long run: see tests/sink/chaos.py."""
    from tests.sink.chaos import run_chaos

    report = await run_chaos(
        gateway_factory, sink_factory, broker, postgres_server, pg_url, tmp_path, minutes=3
    )
    assert report.missing == 0 and report.duplicates == 0, report
