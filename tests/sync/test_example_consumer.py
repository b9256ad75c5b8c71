"""docs/examples/consumer.py, run as its own process against a real mosquitto, the real daemon and
an emulated ZK terminal: every punch ends up in its SQLite file exactly once, also across a
crash of the consumer while punches keep flowing (its persistent session holds them)."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.reconcile import pending_count
from tests.support.waiting import wait_until_async
from tests.support.zk import expected_ids

CONSUMER = Path(__file__).resolve().parents[2] / "docs" / "examples" / "consumer.py"


class ConsumerProcess:
    """The example consumer as a child process, started and signalled by its pid."""

    def __init__(self, broker: Broker, db: Path, log: Path) -> None:
        self.command = [
            sys.executable, str(CONSUMER), "--host", broker.host, "--port", str(broker.port),
            "--client-id", "central-test", "--db", str(db),
        ]  # fmt: skip
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def subscriptions(self) -> int:
        return self.output().splitlines().count("subscribed")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        process, self.process = self.process, None
        assert process is not None
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise


@pytest.fixture
def consumer(broker: Broker, tmp_path: Path) -> Iterator[ConsumerProcess]:
    running = ConsumerProcess(broker, tmp_path / "central.db", tmp_path / "consumer.log")
    yield running
    if running.process is not None:
        with contextlib.suppress(Exception):
            running.stop(signal.SIGKILL)


def stored_ids(db: Path) -> list[str]:
    """Every id in the consumer's punches table (a list: a repeated id would show)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            return [row[0] for row in conn.execute("SELECT id FROM punches")]
        except sqlite3.OperationalError:  # the table is not created yet
            return []


async def test_example_consumer_stores_every_punch_once(
    gateway_factory: Callable[..., GatewayProcess], consumer: ConsumerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "central.db"
    emulator = ZkEmulator(serial_number="SN-CENTRAL", transports=("tcp",))
    emulator.generate_log(records=400, days=5, users=20, seed=3)
    emulator.add_user("42")
    await emulator.start()
    try:
        consumer.start()  # first, so that its session exists before anything is published
        await wait_until_async(lambda: consumer.subscriptions() >= 1, timeout=20, message=consumer.output)
        gateway = gateway_factory(
            [zk_terminal("door-1", emulator, poll_interval=1, live=False, timeout=3)],
            mqtt={"batch_size": 50},
        )
        gateway.start()
        first = set(expected_ids(emulator))
        await gateway.wait_until_async(
            lambda: first <= set(stored_ids(db)), timeout=60, message="the backlog in the consumer's file"
        )

        # The consumer crashes; punches go on while it is away. The broker queues them in its session.
        assert consumer.stop(signal.SIGKILL) == -signal.SIGKILL
        start = dt.datetime.now().replace(microsecond=0)
        for n in range(30):
            emulator.add_punch("42", when=start + dt.timedelta(seconds=n), state=n % 2, verify=1)
        everything = set(expected_ids(emulator))
        assert len(everything) == len(first) + 30
        buffer = tmp_path / "buffer.db"
        await gateway.wait_until_async(
            # The first read, then the poll whose count shows the new punches reads them (the
            # records after the last one stored: a tail read).
            lambda: (
                len(gateway.events("full_read")) + len(gateway.events("tail_read")) >= 2
                and pending_count(buffer) == 0
            ),
            timeout=60,
            message="the new punches acknowledged by the broker",
        )
        missing_while_away = everything - set(stored_ids(db))
        assert len(missing_while_away) == 30  # not stored yet: the consumer is down

        consumer.start()
        await gateway.wait_until_async(
            lambda: everything <= set(stored_ids(db)),
            timeout=60,
            message="the queued punches after the restart",
        )
        assert "connected (resumed session)" in consumer.output()
        assert consumer.stop() == 0  # SIGTERM: a clean stop
    finally:
        await emulator.stop()

    ids = stored_ids(db)
    assert len(ids) == len(set(ids)) == len(everything) and set(ids) == everything
    lines = [line for line in consumer.output().splitlines() if line.startswith("punch ")]
    printed = [line.split()[1] for line in lines]
    assert sorted(printed) == sorted(everything), "each new punch is printed once"
    assert f"stopped; {len(everything)} punches stored" in consumer.output()
    assert "device gw-test/door-1 online (no faults; live)" in consumer.output()


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_consumer", CONSUMER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_consumer_tells_stale_device_states() -> None:
    """The rule of docs/mqtt-contract.md, "Live or stale", as the example implements it."""
    module = _load_example()
    now = dt.datetime(2024, 3, 4, 12, 0, tzinfo=dt.UTC)
    gateway = {"state": "online", "started_at": "2024-03-04T08:00:00Z"}
    fresh = {"state": "online", "as_of": "2024-03-04T11:55:00Z"}
    assert module.device_state_is_live(fresh, gateway, now) == (True, "live")
    assert not module.device_state_is_live(fresh, {"state": "offline"}, now)[0]
    assert not module.device_state_is_live(fresh, None, now)[0]
    assert not module.device_state_is_live({**fresh, "as_of": "2024-03-04T07:59:00Z"}, gateway, now)[0]
    assert not module.device_state_is_live({**fresh, "as_of": "2024-03-04T11:39:00Z"}, gateway, now)[0]
    assert not module.device_state_is_live({"state": "online"}, gateway, now)[0]
