"""Every fault an emulated terminal can produce, against one running gateway and a real broker.

One gateway process reads a dozen emulated ZK terminals: one stays healthy throughout, each
other one gets its own fault injected through the emulator. For each: the right code is
raised within two poll intervals (plus the driver's timeout where the fault *is* a timeout),
published retained on `devices/{name}/state` and as a `fault_raised` event, visible in
/metrics and in `punchgate status`, and cleared (event, retained state, metrics) after the
fault is removed. Faults are injected all at once so the whole run takes well under a minute.
Then the broker goes away for longer than the grace period: /healthz answers 503, and 200
again once it is back. All payloads are validated against the JSON Schemas in docs/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.health.rig import PUNCHER, EmulatorFarm, api_devices, fault_metrics, http_get
from tests.support.broker import Broker, free_port
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import REPO, GatewayProcess
from tests.support.schemas import validate
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_for

GATEWAY = "health-gw"
BASE = f"punchgate/{GATEWAY}"
POLL = 2.0  # seconds between polls of every terminal
TIMEOUT = 1.0  # terminal socket timeout
HOLD = 20.0  # fault_hold_seconds: how long one-off faults stay visible
SILENT_SECONDS = 6.0  # working seconds without punches before `silent`
# "Within two poll intervals", plus the time a timeout takes to be a timeout, plus delivery
# through the broker on a busy shared machine.
RAISE_WITHIN = 2 * POLL + 2 * TIMEOUT + 2.0
CLEAR_WITHIN = HOLD + 15.0  # after removal: hold time, reconnect backoff (≤ 5 s), a poll

Step = Callable[[EmulatorFarm, ZkEmulator], None]


def fault(name: str, **params: Any) -> Step:
    return lambda farm, emu: farm.run(emu.set_fault(name, **params))  # type: ignore[arg-type]


def unfault(name: str) -> Step:
    return lambda farm, emu: farm.run(emu.clear_fault(name))  # type: ignore[arg-type]


def set_enabled(value: bool) -> Step:
    return lambda farm, emu: farm.do(lambda: setattr(emu, "enabled", value))


def punch() -> Step:
    def step(farm: EmulatorFarm, emu: ZkEmulator) -> None:
        farm.do(lambda: emu.add_punch(PUNCHER))

    return step


def nothing() -> Step:
    return lambda farm, emu: None


# Drop the gateway's current session so the next contact is a fresh connect (the emulator
# keeps an open session alive through refuse_connections and a changed comm key).
DROP_SESSION = fault("restart", silent=False)


@dataclass
class Case:
    device: str
    code: str
    inject: list[Step]
    remove: list[Step]
    expect_state: str = "degraded"
    records: int = 20
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("unreachable", "unreachable", [fault("refuse_connections"), DROP_SESSION], [unfault("refuse_connections")], "offline"),
    Case("timeout", "timeout", [fault("hang")], [unfault("hang")], "offline"),
    Case("auth", "auth_failed", [fault("comm_key_changed"), DROP_SESSION], [unfault("comm_key_changed")], "offline"),
    Case("garbage", "protocol_error", [fault("garbage_replies", count=1)], [nothing()]),
    Case("disabled", "stuck_disabled", [fault("stays_disabled"), set_enabled(False)], [unfault("stays_disabled"), set_enabled(True)]),
    Case("full", "log_nearly_full", [fault("log_full")], [unfault("log_full")]),
    Case("reset", "log_reset", [fault("log_cleared")], [nothing()]),
    Case("replaced", "device_replaced", [fault("serial_changed")], [unfault("serial_changed")]),
    Case("drift", "clock_drift", [fault("clock_drift", offset=600, rate=0)], [unfault("clock_drift")]),
    Case("battery", "clock_invalid", [fault("dead_battery")], [unfault("dead_battery")]),
    Case("silent", "silent", [nothing()], [punch()], records=0),
]  # fmt: skip


def _config(tmp: Path, broker_port: int, http_port: int, ports: dict[str, int]) -> Path:
    health = {"fault_hold_seconds": HOLD}
    overrides: dict[str, dict[str, Any]] = {
        # Round-the-clock working calendar, so the test does not depend on the weekday.
        "silent": {
            **health,
            "silent_hours": SILENT_SECONDS / 3600,
            "offline_after_failures": 2,
            "work_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "work_start": dt.time(0, 0),
            "work_end": dt.time(0, 0),
        },
        "corrected": {**health, "clock_correct_min_seconds": 5, "clock_correct_max_seconds": 3600},
    }
    terminals = []
    for name, port in ports.items():
        terminal = zk_terminal(name, port, poll_interval=POLL, timeout=TIMEOUT, live=False)
        if name in overrides:
            terminal["health"] = overrides[name]
        terminals.append(terminal)
    return write_config(
        tmp / "gateway.toml",
        gateway_id=GATEWAY,
        broker_port=broker_port,
        buffer_path=tmp / "buffer.db",
        http_port=http_port,
        mqtt={"reconnect_min": 0.2, "reconnect_max": 1.0},
        sections={
            "health": {
                **health,
                "offline_after_failures": 2,
                "broker_grace_seconds": 2,
                "gateway_clock": "trust",  # this sandbox's kernel says "unsynchronised"; see test_clock.py
            }
        },
        terminals=terminals,
        timezone="UTC",
        shutdown_timeout=5,
    )


@dataclass
class Rig:
    farm: EmulatorFarm
    broker: Broker
    gateway: GatewayProcess
    subscriber: Subscriber
    url: str

    def events(self, device: str, code: str, event: str) -> list[dict[str, Any]]:
        return [
            m.json()
            for m in self.subscriber.on(f"/devices/{device}/events")
            if m.json()["code"] == code and m.json()["event"] == event
        ]

    def states(self, device: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.subscriber.on(f"/devices/{device}/state")]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("health")
    farm = EmulatorFarm()
    # Persistent, with a persistent subscriber session: messages the gateway publishes right
    # after a broker restart are queued for the subscriber even before it has reconnected.
    broker = Broker(tmp / "broker", persistent=True)
    gateway: GatewayProcess | None = None
    subscriber: Subscriber | None = None
    try:
        broker.start()
        names = ["healthy", "corrected", *(case.device for case in CASES)]
        records = {case.device: case.records for case in CASES}
        for seed, name in enumerate(names):
            farm.add(name, records=records.get(name, 20), seed=seed)
        http_port = free_port()
        ports = {name: farm.terminals[name].tcp_port or 0 for name in names}
        subscriber = Subscriber(broker.host, broker.port, f"{BASE}/#", persistent_session=True).start()
        gateway = GatewayProcess(_config(tmp, broker.port, http_port, ports))
        gateway.start(ready_timeout=30)
        rig = Rig(farm, broker, gateway, subscriber, f"http://127.0.0.1:{http_port}")
        gateway.wait_until(
            lambda: all(
                state["state"] == "online" for n, state in api_devices(rig.url).items() if n != "silent"
            ),
            timeout=30,
            message=lambda: f"terminals online: {api_devices(rig.url)}",
            interval=0.2,
        )
        yield rig
    finally:
        if subscriber is not None:
            subscriber.stop()
        if gateway is not None:
            gateway.stop()
        broker.stop()
        farm.close()


def _retained_state(rig: Rig, device: str) -> dict[str, Any]:
    """What a newcomer gets on subscribing: the retained state (checked to be retained)."""
    with Subscriber(rig.broker.host, rig.broker.port, f"{BASE}/devices/{device}/state") as fresh:
        assert fresh.wait_for(lambda: bool(fresh.messages), timeout=10), f"no retained state for {device}"
        first = fresh.messages[0]
    assert first.retain, f"state of {device} was not retained"
    payload: dict[str, Any] = first.json()
    validate("device-state", payload)
    return payload


def _status_cli(rig: Rig) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", "status", "--url", rig.url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "250", "FORCE_COLOR": "0", "NO_COLOR": "1"},
    )
    return done.returncode, done.stdout + done.stderr


def _table_rows(out: str) -> dict[str, str]:
    """`punchgate status` table rows by terminal name, wrapped continuation lines joined."""
    rows: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) < 3:
            continue
        current = cells[1] or current
        rows[current] = rows.get(current, "") + " " + " ".join(cells[2:])
    return rows


def _in_state(rig: Rig, device: str, state: str) -> Callable[[], bool]:
    return lambda: api_devices(rig.url)[device]["state"] == state


def test_every_fault_is_raised_published_visible_and_cleared(rig: Rig) -> None:  # noqa: C901 - one scenario walks every fault through one rig; a rig per fault costs minutes
    problems: list[str] = []
    healthy_seen: list[str] = []

    def watch_healthy() -> None:
        healthy_seen.append(api_devices(rig.url)["healthy"]["state"])

    # --- inject every fault at once, and time each raise --------------------------------
    injected_at: dict[str, float] = {}
    for case in CASES:
        if case.device == "silent":
            # Its "fault" is the absence of punches: start the clock from a fresh punch.
            punch()(rig.farm, rig.farm.terminals["silent"])
        for step in case.inject:
            step(rig.farm, rig.farm.terminals[case.device])
        injected_at[case.device] = time.monotonic()

    raised_after: dict[str, float] = {}
    deadline = time.monotonic() + RAISE_WITHIN + SILENT_SECONDS + 5
    while len(raised_after) < len(CASES) and time.monotonic() < deadline:
        for case in CASES:
            if case.device not in raised_after and rig.events(case.device, case.code, "fault_raised"):
                raised_after[case.device] = time.monotonic() - injected_at[case.device]
        watch_healthy()
        time.sleep(0.1)
    for case in CASES:
        limit = RAISE_WITHIN + (SILENT_SECONDS if case.code == "silent" else 0)
        took = raised_after.get(case.device)
        if took is None:
            problems.append(
                f"{case.device}: {case.code} never raised; states: {rig.states(case.device)[-1:]}"
            )
        elif took > limit:
            problems.append(f"{case.device}: {case.code} raised after {took:.1f} s (limit {limit:.1f} s)")
    assert not problems, "\n".join(problems) + "\n" + rig.gateway.log_tail()

    # --- visible everywhere while raised ------------------------------------------------
    metrics = fault_metrics(rig.url)
    code, out = _status_cli(rig)
    rows = _table_rows(out)
    watch_healthy()
    assert code == 1, out  # unhealthy terminals: non-zero for monitoring scripts
    for case in CASES:
        retained = _retained_state(rig, case.device)
        if case.code not in {f["code"] for f in retained["faults"]}:
            problems.append(f"{case.device}: retained state lacks {case.code}: {retained}")
        if metrics.get((case.device, case.code)) != 1.0:
            problems.append(
                f"{case.device}: /metrics shows {case.code}={metrics.get((case.device, case.code))}"
            )
        if case.code not in rows.get(case.device, ""):
            problems.append(
                f"{case.device}: `punchgate status` row lacks {case.code}: {rows.get(case.device)!r}"
            )
    for case in CASES:
        # Offline needs K failed contacts; the others are degraded at once.
        if not wait_for(_in_state(rig, case.device, case.expect_state), timeout=15, interval=0.1):
            problems.append(
                f"{case.device}: state {api_devices(rig.url)[case.device]['state']}, want {case.expect_state}"
            )
    assert not problems, "\n".join(problems) + "\n" + out

    # --- remove every fault; each clears ------------------------------------------------
    for case in CASES:
        for step in case.remove:
            step(rig.farm, rig.farm.terminals[case.device])
    removed_at = time.monotonic()
    pending = {case.device: case for case in CASES}
    while pending and time.monotonic() < removed_at + CLEAR_WITHIN:
        for name, case in list(pending.items()):
            if rig.events(name, case.code, "fault_cleared"):
                del pending[name]
        watch_healthy()
        time.sleep(0.1)
    assert not pending, f"never cleared: {sorted(pending)}\n{rig.gateway.log_tail()}"
    metrics = fault_metrics(rig.url)
    for case in CASES:
        if case.code == "silent":
            continue  # it is silent again a few seconds after the punch, by design
        retained = _retained_state(rig, case.device)
        if case.code in {f["code"] for f in retained["faults"]}:
            problems.append(f"{case.device}: retained state still has {case.code}")
        if metrics.get((case.device, case.code)) != 0.0:
            problems.append(f"{case.device}: /metrics still shows {case.code}")
    assert not problems, "\n".join(problems)

    # --- raised once, cleared once; every payload matches its schema ---------------------
    for case in CASES:
        raised = rig.events(case.device, case.code, "fault_raised")
        cleared = rig.events(case.device, case.code, "fault_cleared")
        assert len(raised) >= 1 and len(cleared) >= 1
        if case.code != "silent":
            assert len(raised) == len(cleared) == 1, (case.device, raised, cleared)
        assert raised[0]["severity"] in ("info", "warning", "error", "critical") and raised[0]["detail"]
        if case.code != "protocol_error":
            # The right code, not a misleading one (a dropped connection is not garbage).
            assert not rig.events(case.device, "protocol_error", "fault_raised"), case.device
    for message in rig.subscriber.on("/events"):
        validate("device-event", message.json())
    for message in rig.subscriber.messages:
        if "/devices/" in message.topic and message.topic.endswith("/state"):
            validate("device-state", message.json())

    # --- the healthy neighbour never noticed --------------------------------------------
    assert healthy_seen and set(healthy_seen) == {"online"}
    assert {s["state"] for s in rig.states("healthy")} == {"online"}
    assert not rig.subscriber.on("/devices/healthy/events")


def test_drift_within_bounds_is_corrected_and_published(rig: Rig) -> None:
    emulator = rig.farm.terminals["corrected"]
    rig.farm.run(emulator.set_fault("clock_drift", offset=300, rate=0))
    assert wait_for(
        lambda: bool(rig.events("corrected", "clock_drift", "clock_corrected")),
        timeout=RAISE_WITHIN,
        interval=0.1,
    )
    event = rig.events("corrected", "clock_drift", "clock_corrected")[0]
    validate("device-event", event)
    assert event["severity"] == "info"
    assert re.search(r"drift was \+(29\d|30\d) s", event["detail"]), event["detail"]
    # The terminal's clock is right again, and nobody saw a clock_drift fault.
    assert wait_for(
        lambda: abs(api_devices(rig.url)["corrected"]["clock_drift_seconds"] or 99) < 5,
        timeout=10,
        interval=0.1,
    )
    assert not rig.events("corrected", "clock_drift", "fault_raised")
    metric = http_get(rig.url + "/metrics")[1].decode()
    assert 'punchgate_device_clock_corrections_total{device="corrected"} 1.0' in metric


def test_healthz_turns_503_while_the_broker_is_down_beyond_grace(rig: Rig) -> None:
    assert http_get(rig.url + "/healthz")[0] == 200
    rig.broker.stop()
    try:
        # Grace is 2 s; the gateway checks the broker every 5 s.
        assert wait_for(lambda: http_get(rig.url + "/healthz")[0] == 503, timeout=20, interval=0.1), (
            rig.gateway.log_tail()
        )
        status, body = http_get(rig.url + "/healthz")
        assert status == 503 and b"broker unreachable" in body
        code, out = _status_cli(rig)
        assert code == 1 and "broker_unreachable" in out
    finally:
        rig.broker.start()
    assert wait_for(lambda: http_get(rig.url + "/healthz")[0] == 200, timeout=30, interval=0.1), (
        rig.gateway.log_tail()
    )
    # The gateway's own fault transitions went out on {base}/events once the broker was back.
    assert rig.subscriber.wait_for(
        lambda: (
            {(m.json()["event"]) for m in rig.subscriber.messages if m.topic == f"{BASE}/events"}
            >= {"fault_raised", "fault_cleared"}
        ),
        timeout=20,
    )
    for message in rig.subscriber.on(f"{BASE}/events"):
        payload = message.json()
        validate("device-event", payload)
        assert payload["device"] == "" and payload["code"] == "broker_unreachable"
    assert api_devices(rig.url)["healthy"]["state"] == "online"


def test_metrics_follow_conventions_and_the_dashboard_uses_real_names(rig: Rig) -> None:
    status, body = http_get(rig.url + "/metrics")
    text = body.decode()
    assert status == 200
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(text)  # parses, or raises on bad format
    }
    assert all(name.startswith("punchgate_") for name in families), sorted(families)
    assert 'punchgate_build_info{version="' in text
    for name, kind in families.items():
        if kind == "counter":
            assert f"{name}_total" in text, name  # counters are exposed with _total
    # Per-device labels are terminal names (never user ids).
    devices = {
        sample.labels["device"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "device" in sample.labels
    }
    assert devices <= {*rig.farm.terminals, ""}  # "": the gateway's own series, scope="gateway"
    # Every metric the Grafana dashboard queries exists.
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    queried = set(re.findall(r"punchgate_[a-z_]+", json.dumps(dashboard)))
    assert queried, "the dashboard queries nothing"
    missing = {name for name in queried if name not in text}
    assert not missing, missing
