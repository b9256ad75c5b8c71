"""Anviz punches travel: emulated bus (pty) -> `punchgate run` (a real process) -> mosquitto.

Same contract as ZK punches: JSON-Schema-valid batches, stable ids, state and verify names,
and the terminal's new flags are cleared only after the punches are stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from punchgate.drivers.anviz.driver import raw_punch
from punchgate.drivers.anviz.emulator import EmulatedTerminal, Faults, PtyBus
from punchgate.gateway.normalize import record_id, to_utc
from tests.support.broker import Broker
from tests.support.config import write_config
from tests.support.gateway import GatewayProcess
from tests.support.schemas import validate
from tests.support.subscriber import Subscriber


def _config(tmp_path: Path, broker: Broker, pty: str) -> Path:
    serial = f"serial://{pty}?gap_ms=0&quiet_ms=40"
    line = {"type": "anviz", "endpoint": serial, "poll_interval": 1, "timeout": 0.3}
    return write_config(
        tmp_path / "gateway.toml",
        gateway_id="e2e-anviz",
        broker_port=broker.port,
        buffer_path=tmp_path / "buffer.db",
        mqtt={"reconnect_min": 0.1, "reconnect_max": 1.0},
        terminals=[
            {**line, "name": "line-a", "device_id": 1},
            {**line, "name": "line-b", "device_id": 2, "retries": 4},
        ],
        timezone="Europe/Berlin",
    )


def _records(subscriber: Subscriber, device: str) -> list[dict[str, Any]]:
    return [r for m in subscriber.on(f"/devices/{device}/punches") for r in m.json()["records"]]


def test_anviz_punches_reach_the_broker_with_the_zk_contract(
    tmp_path: Path, broker: Broker, subscriber: Subscriber
) -> None:
    line_a = EmulatedTerminal(1, serial_number="ANVIZ-A")
    line_b = EmulatedTerminal(2, serial_number="ANVIZ-B", faults=Faults(crc_error_every=6, noise_every=5))
    line_a.add_history(40)
    line_b.add_history(55)
    with PtyBus([line_a, line_b]) as bus, GatewayProcess(_config(tmp_path, broker, bus.path)) as gateway:
        gateway.wait_until(lambda: subscriber.reconciler.records >= 95, timeout=60, message="95 punches")
        gateway.wait_until(
            lambda: line_a.new_count == 0 and line_b.new_count == 0,
            timeout=20,
            message=lambda: (
                f"new flags cleared after the commit ({line_a.new_count}, {line_b.new_count} left)"
            ),
        )
        line_a.punch(7777, state=1, backup_code=0x08)
        gateway.wait_until(
            lambda: len(_records(subscriber, "line-a")) == 41,
            timeout=20,
            message="a punch after the first read",
        )
        assert gateway.stop() == 0, gateway.log_tail()

    for message in subscriber.on("/punches"):
        validate("punch-batch", message.json())
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
