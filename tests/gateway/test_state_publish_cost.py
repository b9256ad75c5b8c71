"""What a poll costs the gateway's state publishing (issue 18): a terminal whose log grows at every
poll must not have every poll build its retained state's model to find it unchanged, and the
status line systemd shows is counted again only when a terminal's state may have changed. The
outcomes stay the contract's (`sync.contract.publish_due`): the state goes out once a count moved
1 % of its capacity, and the status line follows every terminal's state.

The gateway is built as the daemon builds it (a real buffer, the forwarder built but not
started); what it hands the forwarder is recorded, and systemd is a real datagram socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway import app_checks, app_publish
from punchgate.gateway.app import Application
from punchgate.gateway.app_terminals import build_worker
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.sdnotify import SystemdNotifier
from punchgate.gateway.settings import Settings
from punchgate.sync.contract import DeviceState
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import Store

CAPACITY = 100_000  # a band of 1,000 records


@pytest.fixture
def app(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> Iterator[Application]:
    terminals = [{"type": "zk", "name": f"door-{n}", "host": "127.0.0.1", "port": 4370 + n} for n in (1, 2)]
    settings = Settings.model_validate(
        {
            "gateway_id": "gw-unit",
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0},
            "terminals": terminals,
        }
    )
    built = Application(settings, notifier=SystemdNotifier({"NOTIFY_SOCKET": notify_socket[1]}))
    built.store = Store.open(settings.buffer, gateway_id=settings.gateway_id)
    built.forwarder = Forwarder(settings, built.store, version="test")  # built, never started
    for terminal in settings.terminals:
        build_worker(built, terminal)
    yield built
    built.store.close()


def info(records: int, users: int = 10) -> DeviceInfo:
    return DeviceInfo(
        serial_number="SN-1",
        record_count=records,
        record_capacity=CAPACITY,
        user_count=users,
        user_capacity=3000,
    )


def test_a_growing_log_publishes_its_state_only_when_the_count_moved_a_band(
    app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    built: list[str] = []
    assert app.forwarder is not None
    monkeypatch.setattr(app.forwarder, "publish_device_state", lambda _d, s: sent.append(s.model_dump()))
    real_state = app_publish.device_state

    def counted_state(app_: Application, health: DeviceHealth) -> DeviceState:
        built.append(health.name)
        return real_state(app_, health)

    monkeypatch.setattr(app_publish, "device_state", counted_state)
    health = app.devices["door-1"]
    health.contact_ok(info(5000), drift_seconds=0.0)
    assert [s["record_count"] for s in sent] == [5000]  # the first state
    for records in range(5001, 5999, 7):  # a few punches at every poll, under the band
        health.contact_ok(info(records), drift_seconds=0.0)
    assert len(sent) == 1
    assert built == ["door-1"], "a poll that moved only the count built the state's model"
    health.contact_ok(info(6000), drift_seconds=0.0)  # 1 % of the capacity since the last one
    health.contact_ok(info(6001, users=12), drift_seconds=0.0)
    assert [s["record_count"] for s in sent] == [5000, 6000]
    health.contact_ok(info(6002, users=40), drift_seconds=0.0)  # users: 1 % of 3,000 is 30
    assert [(s["record_count"], s["user_count"]) for s in sent][-1] == (6002, 40)
    # Whatever else is in the key still goes out at once, the counts with it.
    health.contact_failed("timeout", "no answer")
    assert [(s["state"], s["record_count"]) for s in sent][-1] == ("degraded", 6002)


def test_the_status_line_follows_each_terminals_state(
    app: Application, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, _ = notify_socket
    assert app.forwarder is not None
    monkeypatch.setattr(app.forwarder, "publish_device_state", lambda _d, _s: None)

    def line() -> str:
        app_checks.report_status(app)
        return sock.recv(4096).decode().removeprefix("STATUS=").split(";")[0]

    assert line() == "2 offline"  # never contacted
    one, two = app.devices["door-1"], app.devices["door-2"]
    one.contact_ok(info(10), drift_seconds=0.0)
    assert line() == "1 offline, 1 online"
    two.contact_ok(info(10), drift_seconds=0.0)
    two.contact_failed("timeout", "no answer")
    assert line() == "1 degraded, 1 online"
    for _ in range(two.thresholds.offline_after_failures):
        two.contact_failed("timeout", "no answer")
    assert line() == "1 offline, 1 online"
    one.contact_ok(info(10_000), drift_seconds=0.0)  # only a count: the same line, not sent again
    app_checks.report_status(app)
    sock.setblocking(False)  # a line would be in the socket already: sent before report_status returned
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
