"""`punchgate run` as a real process: systemd notifications over a real socket, signals, shutdown."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.broker import Broker, free_port
from tests.gateway_process import GatewayProcess, render_config


def make_gateway(
    tmp_path: Path, broker_port: int, *, terminals: list[dict[str, object]] | None = None
) -> GatewayProcess:
    config = tmp_path / "gw.toml"
    config.write_text(
        render_config(
            gateway_id="gw-run",
            broker_port=broker_port,
            buffer_path=tmp_path / "buffer.db",
            terminals=terminals or [],
            top={"shutdown_timeout": 5},
        )
    )
    return GatewayProcess(config)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ready_watchdog_and_clean_stop(tmp_path: Path, broker: Broker, sig: signal.Signals) -> None:
    gateway = make_gateway(tmp_path, broker.port)
    gateway.start(extra_env={"WATCHDOG_USEC": "400000"})  # systemd would ping-check every 0.4 s
    ready = gateway.wait_for_notification("READY=1", timeout=1)
    assert "STATUS=reading 0 terminals" in ready
    time.sleep(1.0)
    pings = [m for m in gateway.read_notifications() if m == "WATCHDOG=1"]
    assert len(pings) >= 3  # every 0.2 s from the event loop
    statuses = [m for m in gateway.read_notifications() if m.startswith("STATUS=")]
    assert any("broker connected" in m and "0 pending" in m for m in statuses), statuses
    process = gateway.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(sig)
    gateway.wait_for_notification("STOPPING=1", timeout=10)
    assert process.wait(15) == 0
    assert time.monotonic() - started < 10
    assert '"event": "gateway_stopped"' in gateway.log_text()


def test_unreachable_terminal_and_broker_never_block_start(tmp_path: Path) -> None:
    # Nothing listens on either port: the daemon still comes up, and says why things fail.
    dead = free_port()
    gateway = make_gateway(
        tmp_path,
        free_port(),
        terminals=[{"type": "zk", "name": "gone", "host": "127.0.0.1", "port": dead, "timeout": 1}],
    )
    gateway.start(wait_ready=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and '"fault": "unreachable"' not in gateway.log_text():
        time.sleep(0.2)
    log = gateway.log_text()
    assert '"fault": "unreachable"' in log and '"device": "gone"' in log
    assert gateway.stop() == 0


def test_config_secrets_never_reach_the_log(tmp_path: Path, broker: Broker) -> None:
    gateway = make_gateway(
        tmp_path,
        broker.port,
        terminals=[{"type": "zk", "name": "locked", "host": "127.0.0.1", "port": free_port(), "timeout": 1}],
    )
    gateway.env = {"PUNCHGATE_MQTT_PASSWORD": "pw-do-not-log", "PUNCHGATE_COMM_KEY_LOCKED": "73519"}
    gateway.start()
    time.sleep(2)
    assert gateway.stop() == 0
    log = gateway.log_text()
    assert "gateway_started" in log
    assert "pw-do-not-log" not in log and "73519" not in log
