"""The HTTP server's routing and the status CLI's verdict, against a small stand-in application.

The end-to-end tests drive the real daemon; these cover what it rarely shows: unknown paths,
methods, HEAD, an unreachable daemon, and the exit code of a healthy gateway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway.clock import GatewayClock
from punchgate.gateway.faults import FaultSet
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.http import HttpServer
from punchgate.gateway.settings import Settings
from punchgate.gateway.status_cli import fetch_status, is_healthy, show_status
from punchgate.sync.contract import UTC_TIME_PATTERN, utc_iso
from tests.support.broker import free_port


@dataclass
class FakeStore:
    def pending_devices(self) -> dict[str, int]:
        return {"gate-1": 3}

    def pending_count(self) -> int:
        return 3

    def staged_count(self) -> int:
        return 0

    def oldest_pending_age(self) -> float | None:
        return 12.0


@dataclass
class FakeStats:
    punches_published: int = 5
    messages_published: int = 2
    publish_failures: int = 0
    reconnects: int = 0
    last_error: str = ""


@dataclass
class FakeForwarder:
    connected: bool = True
    stats: FakeStats = field(default_factory=FakeStats)


class FakeApp:
    """Just the attributes gateway.status / gateway.metrics read from the Application."""

    def __init__(self) -> None:
        self.settings = Settings.model_validate({"gateway_id": "gw-unit"})
        self.started_at = dt.datetime.now(dt.UTC)
        self.store: Any = FakeStore()
        self.forwarder: Any = FakeForwarder()
        self.gateway_faults = FaultSet("")
        self.gateway_clock = GatewayClock("trust")
        self.loop_heartbeat = time.monotonic()
        self.fault_transitions: dict[tuple[str, str, str], int] = {}
        health = DeviceHealth("gate-1")
        health.contact_ok(
            DeviceInfo(serial_number="S1", record_count=10, record_capacity=100, clock=None),
            drift_seconds=None,
        )
        self.devices = {"gate-1": health}
        self.forwarder_running = True

    def forwarder_alive(self) -> bool:
        return self.forwarder_running


async def _request(port: int, raw: bytes) -> bytes:
    """One raw request; the server answers and closes. (aiohttp refuses HTTP/1.1 without Host: 400.)"""
    raw = raw.replace(
        b"Host: x\r\n", f"Host: 127.0.0.1:{port}\r\n".encode()
    )  # the API answers only its own Host
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


@pytest.fixture
async def served() -> Any:
    app = FakeApp()
    server = HttpServer(app)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield app, server
    finally:
        await server.close()


async def test_routes_methods_and_head(served: Any) -> None:
    _app, server = served
    ok = await _request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"ok\n")
    missing = await _request(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404")
    post = await _request(server.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405")
    head = await _request(server.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # headers only
    page = await _request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # The console (tests/console) asks who you are first.
    assert page.startswith(b"HTTP/1.1 303") and b"Location: /login?next=%2F" in page


async def test_healthz_reasons(served: Any) -> None:
    app, server = served
    app.forwarder_running = False
    dead = await _request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert dead.startswith(b"HTTP/1.1 503") and b"forwarder task is not running" in dead
    app.forwarder_running = True
    app.gateway_faults.raise_fault("broker_unreachable", "connection refused")
    within_grace = await _request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert within_grace.startswith(b"HTTP/1.1 200")  # 60 s of grace by default
    app.loop_heartbeat -= 60
    stalled = await _request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert stalled.startswith(b"HTTP/1.1 503") and b"event loop stalled" in stalled


async def test_status_cli_exit_codes(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app, server = served
    url = f"http://127.0.0.1:{server.port}"
    assert await asyncio.to_thread(show_status, url) == 0
    out = capsys.readouterr().out
    assert "gate-1" in out and "online" in out and "10/100" in out
    app.devices["gate-1"].contact_failed("timeout", "no answer")
    assert await asyncio.to_thread(show_status, url) == 1
    assert "timeout" in capsys.readouterr().out  # (narrow test terminal: the detail wraps)
    assert await asyncio.to_thread(show_status, f"http://127.0.0.1:{free_port()}") == 2
    assert "no punchgate is answering at http://127.0.0.1:" in capsys.readouterr().out


def test_is_healthy_needs_everything_good() -> None:
    good: dict[str, Any] = {
        "gateway": {"faults": [], "broker_connected": True, "healthy": True},
        "devices": [{"state": "online"}],
    }
    assert is_healthy(good)
    assert not is_healthy({**good, "devices": [{"state": "degraded"}]})
    assert not is_healthy({**good, "gateway": {**good["gateway"], "broker_connected": False}})
    assert not is_healthy({**good, "gateway": {**good["gateway"], "faults": [{"code": "disk_low"}]}})
    assert not is_healthy({**good, "gateway": {**good["gateway"], "healthy": False}})


async def test_api_and_status_json_timestamps_are_the_mqtt_format(
    served: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """/api/devices and `punchgate status --json` write times as the MQTT payloads do: ISO 8601, UTC, Z."""
    app, server = served
    health = app.devices["gate-1"]
    health.contact_failed("timeout", "no answer")  # a fault, with its `since`
    health.punches_stored(dt.datetime(2024, 3, 4, 6, 58, 12, tzinfo=dt.UTC))
    url = f"http://127.0.0.1:{server.port}"
    status = await asyncio.to_thread(fetch_status, url)
    device = status["devices"][0]
    stamps = [
        status["gateway"]["started_at"],
        device["last_contact"],
        device["last_punch_at"],
        device["faults"][0]["since"],
    ]
    assert all(re.fullmatch(UTC_TIME_PATTERN, stamp) for stamp in stamps), stamps
    assert device["last_punch_at"] == "2024-03-04T06:58:12Z"
    assert status["gateway"]["started_at"] == utc_iso(app.started_at)
    capsys.readouterr()
    assert await asyncio.to_thread(show_status, url, as_json=True) == 1
    out = capsys.readouterr().out  # (the in-process server's log lines may surround the JSON)
    start = re.search(r"^\{", out, re.MULTILINE)
    assert start is not None, out
    printed, _end = json.JSONDecoder().raw_decode(out[start.start() :])
    assert printed["devices"][0]["last_contact"] == device["last_contact"]
    assert printed["gateway"]["started_at"] == status["gateway"]["started_at"]
