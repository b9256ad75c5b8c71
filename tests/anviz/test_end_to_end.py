"""Anviz punches travel: emulated bus (pty) -> `punchgate run` (a real process) -> mosquitto.

Same contract as ZK punches: JSON-Schema-valid batches, stable ids, state and verify names,
and the terminal's new flags are cleared only after the punches are stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema  # type: ignore[import-untyped]

from punchgate.drivers.anviz.driver import raw_punch
from punchgate.drivers.anviz.emulator import EmulatedTerminal, Faults, PtyBus
from punchgate.gateway.normalize import record_id, to_utc
from tests.broker import Broker
from tests.subscriber import Subscriber

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"


def _config(tmp_path: Path, broker: Broker, pty: str) -> Path:
    serial = f"serial://{pty}?gap_ms=0&quiet_ms=40"
    text = f"""
gateway_id = "e2e-anviz"
timezone = "Europe/Berlin"

[mqtt]
host = "{broker.host}"
port = {broker.port}
reconnect_min = 0.1
reconnect_max = 1.0

[buffer]
path = "{tmp_path / "buffer.db"}"

[http]
enabled = false

[[terminals]]
type = "anviz"
name = "line-a"
endpoint = "{serial}"
device_id = 1
poll_interval = 1
timeout = 0.3

[[terminals]]
type = "anviz"
name = "line-b"
endpoint = "{serial}"
device_id = 2
poll_interval = 1
timeout = 0.3
retries = 4
"""
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def _wait(condition: Any, timeout: float, process: subprocess.Popen[bytes]) -> bool:
    """Poll until `condition` holds; give up at the deadline or as soon as `process` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _records(subscriber: Subscriber, device: str) -> list[dict[str, Any]]:
    return [r for m in subscriber.on(f"/devices/{device}/punches") for r in m.json()["records"]]


def test_anviz_punches_reach_the_broker_with_the_zk_contract(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    line_a = EmulatedTerminal(1, serial_number="ANVIZ-A")
    line_b = EmulatedTerminal(2, serial_number="ANVIZ-B", faults=Faults(crc_error_every=6, noise_every=5))
    line_a.add_history(40)
    line_b.add_history(55)
    log_path = tmp_path / "gateway.log"
    with PtyBus([line_a, line_b]) as bus, log_path.open("wb") as log_file:
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "punchgate.gateway",
                "run",
                "--config",
                str(_config(tmp_path, broker, bus.path)),
            ],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            all_read = _wait(lambda: subscriber.reconciler.records >= 95, 60, gateway)
            cleared = lambda: line_a.new_count == 0 and line_b.new_count == 0  # noqa: E731
            marked = all_read and _wait(cleared, 20, gateway)
            late = line_a.punch(7777, state=1, backup_code=0x08) if marked else None
            arrived = lambda: len(_records(subscriber, "line-a")) == 41  # noqa: E731
            late_arrived = late is not None and _wait(arrived, 20, gateway)
        finally:
            if gateway.poll() is None:
                os.kill(gateway.pid, signal.SIGTERM)
            gateway.wait(timeout=30)
    log_tail = log_path.read_text(errors="replace")[-3000:]
    assert all_read, f"{subscriber.reconciler}\n{log_tail}"
    assert marked, f"new flags not cleared after the commit: {line_a.new_count}, {line_b.new_count}"
    assert late_arrived, f"a punch after the first read did not arrive\n{log_tail}"
    assert gateway.returncode == 0, log_tail

    batch_schema = json.loads((SCHEMAS / "punch-batch.json").read_text())
    for message in subscriber.on("/punches"):
        jsonschema.validate(message.json(), batch_schema)
        assert not message.retain

    zone = ZoneInfo("Europe/Berlin")
    for terminal, device in ((line_a, "line-a"), (line_b, "line-b")):
        published = _records(subscriber, device)
        expected = [raw_punch(r, terminal.epoch) for r in terminal.records]
        assert [p["id"] for p in published] == [record_id(terminal.serial_number, raw) for raw in expected]
        for record, raw in zip(published, expected, strict=True):
            assert record["user_id"] == raw.user_id
            assert record["local_time"] == raw.timestamp.isoformat()
            utc, _, _ = to_utc(raw.timestamp, zone)
            assert record["utc_time"].replace("Z", "+00:00") == utc.isoformat()
            assert record["state"]["code"] == raw.state
            assert record["verify"]["code"] == raw.verify
            assert record["work_code"] == raw.work_code
    first_three = _records(subscriber, "line-a")[:3]
    assert [r["verify"]["name"] for r in first_three] == ["fingerprint", "card", "password"]
    assert [r["state"]["name"] for r in first_three[:2]] == ["check_in", "check_out"]
    last = _records(subscriber, "line-a")[-1]
    assert (last["user_id"], last["state"]["name"], last["verify"]["name"]) == ("7777", "check_out", "card")
    assert subscriber.reconciler.duplicates == 0
