"""/metrics series that must exist and must not collide (docs/health.md, "Metrics"), from the real
Application (not started, with a stand-in buffer): a pending-punches series for every configured
terminal, 0 when none wait, and gateway fault transitions apart from a terminal called `gateway`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway.app import Application
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.metrics import render_metrics
from punchgate.gateway.settings import Settings

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


class FakeStore:
    def __init__(self, pending: dict[str, int]) -> None:
        self.pending = pending

    def pending_devices(self) -> dict[str, int]:
        return dict(self.pending)

    def staged_count(self) -> int:
        return 0

    def oldest_pending_age(self) -> float | None:
        return 5.0 if self.pending else None


def make_app(pending: dict[str, int]) -> Application:
    """The real Application, not started: terminals `gateway` (the awkward name) and `door-2`,
    each in contact once, with the fault counting wired as `start()` wires it."""
    terminals = [
        {"type": "zk", "name": name, "host": "127.0.0.1", "port": port}
        for name, port in (("gateway", 4370), ("door-2", 4371))
    ]
    app = Application(Settings.model_validate({"gateway_id": "gw-unit", "terminals": terminals}))
    app.store = FakeStore(pending)  # type: ignore[assignment]
    app.gateway_faults.on_transition.append(app._publish_transition)
    for terminal in app.settings.terminals:
        health = DeviceHealth(terminal.name)
        health.faults.on_transition.append(app._publish_transition)
        health.contact_ok(DeviceInfo(serial_number=f"S-{terminal.name}"), drift_seconds=None)
        app.devices[terminal.name] = health
    return app


def samples(app: Application, name: str) -> list[dict[str, Any]]:
    text = render_metrics(app).decode()
    return [
        {**sample.labels, "value": sample.value}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_pending_punches_has_a_series_per_configured_terminal() -> None:
    idle = samples(make_app({}), "punchgate_buffer_pending_punches")
    assert sorted((s["device"], s["value"]) for s in idle) == [("door-2", 0.0), ("gateway", 0.0)]
    # A terminal removed from the config keeps its series while its punches wait.
    busy = samples(make_app({"door-2": 4, "old-door": 2}), "punchgate_buffer_pending_punches")
    assert sorted((s["device"], s["value"]) for s in busy) == [
        ("door-2", 4.0),
        ("gateway", 0.0),
        ("old-door", 2.0),
    ]


def test_gateway_fault_transitions_do_not_collide_with_a_terminal_called_gateway() -> None:
    app = make_app({})
    app.devices["gateway"].faults.raise_fault("clock_drift", "off by 90 s")
    app.gateway_faults.raise_fault("broker_unreachable", "connection refused")
    transitions = samples(app, "punchgate_fault_transitions_total")
    assert sorted((s["scope"], s["device"], s["code"], s["value"]) for s in transitions) == [
        ("device", "gateway", "clock_drift", 1.0),
        ("gateway", "", "broker_unreachable", 1.0),
    ]


def test_dashboard_broker_panel_shows_the_worst_gateway() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    connected = [e for e in exprs if "punchgate_mqtt_connected" in e]
    assert connected and all(e.startswith("min(") for e in connected), connected
