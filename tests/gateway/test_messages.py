"""What operators read: the clock_drift detail, the probe's diagnosis of a held session, and the
log of a terminal that stays down (one line per change, not one per retry)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, cast

import pytest

from punchgate.drivers.base import DeviceInfo, Driver, RawPunch, UnreachableError
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway import worker_failures as worker_module
from punchgate.gateway.calendar import WorkingCalendar
from punchgate.gateway.health import DeviceHealth, Thresholds
from punchgate.gateway.worker import DeviceWorker
from punchgate.gateway.worker_failures import Backoff, FailureLog
from punchgate.sync.store import Store
from tests.support.gateway import run_punchgate
from tests.support.waiting import wait_until_async

NOW = dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.UTC)  # winter: Berlin is UTC+01:00


# --- clock_drift: whole hours are a timezone mistake --------------------------------------------
def _health(zone: str | None) -> DeviceHealth:
    calendar = (
        None if zone is None else WorkingCalendar.build(zone=zone, days=[], start=NOW.time(), end=NOW.time())
    )
    return DeviceHealth("t", Thresholds(clock_drift_seconds=60), calendar=calendar, clock=lambda: NOW)


def _drift_detail(health: DeviceHealth, drift: float) -> str | None:
    health.contact_ok(
        DeviceInfo(serial_number="S1", clock=dt.datetime(2026, 1, 15, 10, 0)), drift_seconds=drift
    )
    fault = health.faults.active.get(DeviceFault.CLOCK_DRIFT)
    return None if fault is None else fault.detail


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        (8 * 3600 + 20, "off by 8 h 0 min (ahead)"),
        (-(8 * 3600) + 170, "off by 7 h 57 min (behind)"),
        (3600 - 290, "off by 0 h 55 min (ahead)"),
        (-3600, "off by 1 h 0 min (behind)"),
    ],
)
def test_a_drift_of_whole_hours_names_the_timezone(drift: float, expected: str) -> None:
    detail = _drift_detail(_health("Europe/Berlin"), drift)
    assert detail is not None
    assert detail.startswith(f"terminal clock off by {drift:+.0f} s (limit 60 s): {expected}: ")
    assert (
        "probably the terminal's timezone is wrong in the config "
        '(timezone = "Europe/Berlin", UTC+01:00 now; ' in detail
    )


def test_the_zone_the_terminal_keeps_is_named() -> None:
    detail = _drift_detail(_health("Europe/Berlin"), 7 * 3600)  # a terminal on Shanghai time
    assert detail is not None and detail.endswith("the terminal's clock keeps UTC+08:00)")
    detail = _drift_detail(_health("Asia/Shanghai"), -8 * 3600)  # the emulator on a UTC host
    assert detail is not None and detail.endswith(
        '(timezone = "Asia/Shanghai", UTC+08:00 now; the terminal\'s clock keeps UTC+00:00)'
    )


@pytest.mark.parametrize("drift", [120, -1000, 1800, 3600 + 400, -(2 * 3600 + 301)])
def test_a_drift_that_is_no_whole_hour_is_just_drift(drift: float) -> None:
    assert _drift_detail(_health("Europe/Berlin"), drift) == (
        f"terminal clock off by {drift:+.0f} s (limit 60 s)"
    )


def test_without_a_zone_the_hint_stays_general() -> None:
    detail = _drift_detail(_health(None), 2 * 3600)
    assert detail == (
        "terminal clock off by +7200 s (limit 60 s): off by 2 h 0 min (ahead): "
        "probably the terminal's timezone is wrong in the config"
    )


# --- probe: a terminal whose only session is held ---------------------------------------------
def _holder(emulator: ZkEmulator, transport: str) -> ZkDriver:
    """A client that holds the terminal's session, as a running gateway does."""
    port = emulator.tcp_port if transport == "tcp" else emulator.udp_port
    return ZkDriver(
        ZkTerminal.model_validate(
            {"name": "gateway", "type": "zk", "host": "127.0.0.1", "port": port, "transport": transport}
        )
    )


async def test_probe_of_a_held_tcp_terminal_says_another_client_may_hold_it() -> None:
    async with ZkEmulator(profile="tft", transports=("tcp",)) as emulator:
        holder = _holder(emulator, "tcp")
        await holder.connect()
        try:
            status, out, err = await run_punchgate(
                "probe", f"zk://127.0.0.1:{emulator.tcp_port}", "--timeout", "1"
            )
        finally:
            await holder.close()
        assert status == 1 and out == ""
        (line,) = [line for line in err.splitlines() if line.strip()]
        assert line.startswith(
            f"probe failed: timeout: the terminal at 127.0.0.1:{emulator.tcp_port} over TCP took the "
            "connection but did not answer CONNECT ("
        ), line
        assert line.endswith(
            "another client (maybe a running punchgate gateway) may hold its single session; "
            "stop that client or try again later"
        ), line
        # The diagnosis was right: with the session free, the same probe succeeds.
        status, out, err = await run_punchgate(
            "probe", f"zk://127.0.0.1:{emulator.tcp_port}", "--timeout", "1", "--last", "0"
        )
        assert status == 0, err
        assert "Serial number" in out


async def test_probe_of_a_held_udp_terminal_mentions_the_session_too() -> None:
    async with ZkEmulator(profile="bw", transports=("udp",)) as emulator:
        holder = _holder(emulator, "udp")
        await holder.connect()
        try:
            status, _, err = await run_punchgate(
                "probe", f"zk://127.0.0.1:{emulator.udp_port}", "--udp", "--timeout", "1"
            )
        finally:
            await holder.close()
        assert status == 1
        assert "probe failed: unreachable: no ZK terminal answered at" in err
        assert err.rstrip().endswith(
            "; or another client (maybe a running punchgate gateway) may hold its single session"
        ), err


# --- a terminal that stays down ---------------------------------------------------------------
class Recorder:
    """Stands in for the worker module's logger: (level, event, fields) of every line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for _, event, fields in self.lines if event == name]


class DeadThenAlive:
    """A terminal that refuses connections (and drops a session) while `down`."""

    name = "t"

    def __init__(self) -> None:
        self.down = True

    async def connect(self) -> None:
        if self.down:
            await asyncio.sleep(0)
            raise UnreachableError("connect tcp://192.0.2.9:4370: Connection refused", device=self.name)

    async def close(self) -> None:
        return None

    async def info(self) -> DeviceInfo:
        if self.down:
            raise UnreachableError("info: connection lost", device=self.name)
        return DeviceInfo(serial_number="S1", clock=None, record_count=0, record_capacity=1000)

    async def read_records(self) -> list[RawPunch]:
        return []

    async def set_time(self, when: dt.datetime) -> None:
        return None

    async def clear_records(self, expected_count: int) -> None:
        return None

    def live(self) -> None:
        return None


class NoStore:
    def get_device_meta(self, device: str) -> dict[str, Any]:
        return {}

    def set_device_meta(self, device: str, meta: dict[str, Any]) -> None:
        return None


class NoSink:
    def notify_new_punches(self) -> None:
        return None


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_dead_terminal_logs_the_change_once_then_reminders_with_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(worker_module, "log", recorder)
    terminal = ZkTerminal.model_validate({"name": "t", "type": "zk", "host": "192.0.2.9"})
    driver = DeadThenAlive()
    health = DeviceHealth("t")
    worker = DeviceWorker(
        terminal=terminal,
        driver=cast(Driver, driver),
        store=cast(Store, NoStore()),
        sink=NoSink(),
        health=health,
        timezone="UTC",
        driver_type="zk",
        backoff=Backoff(0.001, 0.001),  # retries as fast as the loop allows: hours of retries in a moment
    )
    clock = Monotonic()
    worker.failure_log = FailureLog(remind_every=600, clock=clock)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until_async(lambda: health.failures_total >= 200, timeout=30)
        assert len(recorder.events("session_failed")) == 1  # was: one warning per retry
        (first,) = recorder.events("session_failed")
        assert first["fault"] == DeviceFault.UNREACHABLE and "Connection refused" in first["error"]
        assert recorder.events("session_still_failing") == []

        clock.now += 600  # ten minutes on: the next failure brings one reminder, with the count
        seen = health.failures_total
        await wait_until_async(lambda: health.failures_total >= seen + 100, timeout=30)
        (reminder,) = recorder.events("session_still_failing")
        assert reminder["fault"] == DeviceFault.UNREACHABLE
        assert reminder["failing_for_seconds"] == 600
        assert reminder["failures_since_last_line"] >= 200  # every failure since the first line
        assert reminder["failures"] == reminder["failures_since_last_line"] + 1

        driver.down = False  # the terminal is back: one line says so, with the count
        await wait_until_async(lambda: bool(recorder.events("session_recovered")), timeout=30)
        (recovered,) = recorder.events("session_recovered")
        assert recovered["failures"] == health.failures_total
        assert recovered["fault"] == DeviceFault.UNREACHABLE

        driver.down = True  # and down again (seen at the next poll): a new streak is logged at once
        worker.request_poll()
        await wait_until_async(lambda: len(recorder.events("session_failed")) == 2, timeout=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    warnings = [line for line in recorder.lines if line[0] == "warning"]
    assert len(warnings) == 3, warnings  # out of some 300+ failed sessions


def test_each_new_fault_of_a_streak_is_logged_once() -> None:
    recorder = Recorder()
    clock = Monotonic()
    failures = FailureLog(remind_every=600, clock=clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker_module, "log", recorder)
        for n in range(50):  # a terminal flapping between refusing and hanging
            failures.failed("unreachable" if n % 2 else "timeout", f"attempt {n}")
    logged = [
        (event, fields.get("fault"), fields.get("previous_fault")) for _, event, fields in recorder.lines
    ]
    assert logged == [("session_failed", "timeout", None), ("session_failed", "unreachable", "timeout")]
