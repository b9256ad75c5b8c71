"""A sink started before its PostgreSQL (a boot, a database restart) waits for it instead of
exiting, says so on /healthz and /metrics, and then stores everything the gateway holds; a sink
stopped while waiting exits cleanly; an SQLite file it can never open is a configuration error.

Real parts: Debian's PostgreSQL started by the test after the sink, mosquitto, the daemon in
central delivery reading an emulated ZK terminal, the sink as its own process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.mosquitto import free_port
from tests.health.rig import http_get
from tests.sink.test_sink_end_to_end import CENTRAL, pg_ids, unconfirmed_in
from tests.support import postgres
from tests.support.config import zk_terminal
from tests.support.gateway import REPO, GatewayProcess
from tests.support.sink import SinkProcess
from tests.support.waiting import wait_until
from tests.support.zk import expected_ids


def healthz(sink: SinkProcess) -> tuple[int, str]:
    status, body = http_get(f"http://127.0.0.1:{sink.http_port}/healthz")
    return status, body.decode()


def waiting_gauge(sink: SinkProcess) -> str | None:
    """The value of punchgate_sink_waiting_for_database as /metrics shows it."""
    status, body = http_get(f"http://127.0.0.1:{sink.http_port}/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith("punchgate_sink_waiting_for_database "):
            return line.split()[1]
    return None


async def test_a_sink_started_before_postgresql_waits_for_it_then_stores_everything(
    gateway_factory: Callable[..., GatewayProcess],
    sink_factory: Callable[..., SinkProcess],
    tmp_path: Path,
) -> None:
    server = postgres.Postgres()  # initialised, not started
    emulator = ZkEmulator(serial_number="SN-SINK-WAIT", transports=("tcp",))
    emulator.generate_log(records=300, days=2, users=20, seed=5)
    await emulator.start()
    try:
        sink = sink_factory(server.url()).start()
        gateway = gateway_factory(
            [zk_terminal("door-1", emulator, poll_interval=1, live=False, timeout=5)], mqtt=CENTRAL
        )
        # Two failed tries: the sink retries rather than exiting after the first.
        await gateway.wait_until_async(
            lambda: len(sink.events("sink_database_waiting")) >= 2, timeout=30, message=sink.output
        )
        assert sink.running
        status, reason = healthz(sink)
        assert status == 503 and reason.startswith("waiting for the database"), (status, reason)
        assert waiting_gauge(sink) == "1.0"
        assert not sink.events("sink_connected")  # it subscribes only once it can store

        gateway.start()  # the gateway keeps what nobody confirms meanwhile
        server.start()
        await gateway.wait_until_async(sink.connected, timeout=60, message=sink.output)
        everything = set(expected_ids(emulator))
        await gateway.wait_until_async(
            lambda: set(pg_ids(server.url())) == everything and unconfirmed_in(tmp_path / "buffer.db") == 0,
            timeout=60,
            message=lambda: f"{len(everything - set(pg_ids(server.url())))} missing in PostgreSQL",
        )
        assert healthz(sink) == (200, "ok\n")
        assert waiting_gauge(sink) == "0.0"
        assert sink.stop() == 0
    finally:
        await emulator.stop()
        server.destroy()


def test_a_sink_stopped_while_waiting_for_its_database_exits_cleanly(
    sink_factory: Callable[..., SinkProcess],
) -> None:
    nobody = free_port()  # no PostgreSQL listens here
    sink = sink_factory(f"postgresql://punchgate@127.0.0.1:{nobody}/punches").start()
    wait_until(lambda: bool(sink.events("sink_database_waiting")), timeout=30, message=sink.output)
    assert sink.stop() == 0
    assert sink.events("sink_stopped_while_waiting_for_database")


def test_an_sqlite_file_the_sink_cannot_open_exits_2_naming_db(tmp_path: Path) -> None:
    where = tmp_path / "no-such-dir" / "sink.db"
    done = subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", "sink", "run", "--db", str(where), "--port", str(free_port()),
         "--http", "off", "--log-format", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--db {where}" in done.stderr
    assert "sink_connected" not in done.stdout
