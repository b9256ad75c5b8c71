"""The health model as pure logic: raise once / clear once, hysteresis, holds, states, silent."""

from __future__ import annotations

import datetime as dt

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway.calendar import WorkingCalendar
from punchgate.gateway.faults import DeviceStatus, FaultTransition, Notice
from punchgate.gateway.health import DeviceHealth, Thresholds

T0 = dt.datetime(2024, 3, 4, 9, 0, tzinfo=dt.UTC)  # a Monday


class FakeClock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def info(**changes: object) -> DeviceInfo:
    base: dict[str, object] = {
        "serial_number": "S1",
        "clock": dt.datetime(2024, 3, 4, 9, 0),
        "record_count": 10,
        "record_capacity": 1000,
        "extra": {"enabled": True},
    }
    base.update(changes)
    return DeviceInfo(**base)  # type: ignore[arg-type]


def make(
    thresholds: Thresholds | None = None, **kwargs: object
) -> tuple[DeviceHealth, list[FaultTransition], FakeClock]:
    clock = FakeClock()
    health = DeviceHealth("t1", thresholds or Thresholds(fault_hold_seconds=0), clock=clock, **kwargs)  # type: ignore[arg-type]
    seen: list[FaultTransition] = []
    health.faults.on_transition.append(seen.append)
    return health, seen, clock


def state(health: DeviceHealth) -> DeviceStatus:
    return health.status  # a call, so the type checker does not narrow the property


def codes(seen: list[FaultTransition]) -> list[tuple[str, bool]]:
    return [(t.code, t.raised) for t in seen]


def test_offline_until_first_contact_then_online() -> None:
    health, seen, _ = make()
    assert state(health) is DeviceStatus.OFFLINE
    health.contact_ok(info(), drift_seconds=0)
    assert state(health) is DeviceStatus.ONLINE
    assert seen == []


def test_contact_failures_raise_once_and_go_offline_after_k() -> None:
    health, seen, _ = make(Thresholds(offline_after_failures=3, fault_hold_seconds=0))
    health.contact_ok(info(), drift_seconds=0)
    for _ in range(2):
        health.contact_failed("unreachable", "refused")
    assert state(health) is DeviceStatus.DEGRADED
    health.contact_failed("unreachable", "refused")
    assert state(health) is DeviceStatus.OFFLINE
    health.contact_ok(info(), drift_seconds=0)
    assert state(health) is DeviceStatus.ONLINE
    assert codes(seen) == [("unreachable", True), ("unreachable", False)]


def test_a_new_contact_failure_replaces_the_previous_one() -> None:
    health, seen, _ = make()
    health.contact_ok(info(), drift_seconds=0)
    health.contact_failed("unreachable", "refused")
    health.contact_failed("auth_failed", "wrong key")
    assert set(health.faults.active) == {"auth_failed"}
    assert codes(seen) == [("unreachable", True), ("unreachable", False), ("auth_failed", True)]


def test_unknown_driver_fault_becomes_protocol_error() -> None:
    health, _, _ = make()
    health.contact_failed("no_such_code", "weird")
    assert "protocol_error" in health.faults.active


def test_a_protocol_error_clears_at_a_poll_that_finds_the_log_in_step() -> None:
    """A contact alone does not clear it (garbage may come in a read); a read or a poll whose
    count agrees with the last good read does, once its hold is over."""
    health, seen, clock = make(Thresholds(fault_hold_seconds=20))
    health.contact_ok(info(), drift_seconds=0)
    health.contact_failed("protocol_error", "garbage reply")
    health.contact_ok(info(), drift_seconds=0)
    assert "protocol_error" in health.faults.active
    health.log_in_step()
    assert "protocol_error" in health.faults.active  # held: visible for fault_hold_seconds
    clock.advance(21)
    health.contact_ok(info(), drift_seconds=0)
    assert "protocol_error" not in health.faults.active
    assert codes(seen) == [("protocol_error", True), ("protocol_error", False)]
    health.log_in_step()  # nothing to clear: no transition, no change
    assert codes(seen) == [("protocol_error", True), ("protocol_error", False)]


def test_log_nearly_full_has_hysteresis() -> None:
    health, seen, _ = make(Thresholds(log_full_ratio=0.9, log_full_clear_ratio=0.85, fault_hold_seconds=0))
    health.contact_ok(info(record_count=900), drift_seconds=0)
    health.contact_ok(info(record_count=880), drift_seconds=0)  # between the levels: stays
    health.contact_ok(info(record_count=905), drift_seconds=0)
    assert codes(seen) == [("log_nearly_full", True)]
    assert health.faults.active["log_nearly_full"].detail == "905 of 1000 records (90%)"
    health.contact_ok(info(record_count=849), drift_seconds=0)
    assert codes(seen) == [("log_nearly_full", True), ("log_nearly_full", False)]


def test_clock_drift_has_hysteresis_and_invalid_clock_supersedes_it() -> None:
    health, seen, _ = make(
        Thresholds(clock_drift_seconds=60, clock_drift_clear_seconds=45, fault_hold_seconds=0)
    )
    health.contact_ok(info(), drift_seconds=61)
    health.contact_ok(info(), drift_seconds=50)  # hovering: no flapping
    health.contact_ok(info(), drift_seconds=-70)
    assert codes(seen) == [("clock_drift", True)]
    health.contact_ok(info(), drift_seconds=44)
    assert codes(seen) == [("clock_drift", True), ("clock_drift", False)]
    # A dead battery: the clock reads 2000, which is not drift.
    health.contact_ok(info(clock=dt.datetime(2000, 1, 1)), drift_seconds=-7.6e8)
    assert set(health.faults.active) == {"clock_invalid"}
    assert "2000-01-01" in health.faults.active["clock_invalid"].detail


def test_stuck_disabled_follows_the_enabled_flag_and_ignores_drivers_that_cannot_tell() -> None:
    health, seen, _ = make()
    health.contact_ok(info(extra={"enabled": False}), drift_seconds=0)
    health.contact_ok(info(extra={}), drift_seconds=0)
    assert "stuck_disabled" in health.faults.active
    health.contact_ok(info(extra={"enabled": True}), drift_seconds=0)
    assert codes(seen) == [("stuck_disabled", True), ("stuck_disabled", False)]


def test_one_off_faults_are_held_for_the_hold_time() -> None:
    health, seen, clock = make(Thresholds(fault_hold_seconds=60))
    health.contact_ok(info(), drift_seconds=0)
    health.set_fault("log_reset", True, "count went down")
    health.set_fault("log_reset", False)
    clock.advance(30)
    health.contact_ok(info(), drift_seconds=0)
    assert "log_reset" in health.faults.active
    clock.advance(31)
    health.contact_ok(info(), drift_seconds=0)
    assert codes(seen) == [("log_reset", True), ("log_reset", False)]


def test_seeing_a_held_fault_again_restarts_its_hold() -> None:
    health, seen, clock = make(Thresholds(fault_hold_seconds=60))
    health.set_fault("device_replaced", True, "S1 -> S2")
    clock.advance(50)
    health.set_fault("device_replaced", True, "S2 -> S1")
    health.set_fault("device_replaced", False)
    clock.advance(50)
    health.faults.release_held()
    assert "device_replaced" in health.faults.active
    assert health.faults.active["device_replaced"].detail == "S2 -> S1"
    clock.advance(11)
    assert health.faults.release_held()
    assert codes(seen) == [("device_replaced", True), ("device_replaced", False)]


def test_state_is_published_on_change_only() -> None:
    health, _, clock = make()
    published: list[str] = []
    counts: list[int | None] = []
    health.on_change.append(lambda h: published.append(h.status.value))
    health.on_counts_only.append(lambda h: counts.append(h.info.record_count if h.info else None))
    health.contact_ok(info(), drift_seconds=0.2)
    clock.advance(60)
    health.contact_ok(info(), drift_seconds=0.9)  # only the contact time and jitter changed
    health.read_done(count=10, new=0)
    assert published == ["online"]
    # A count is the listeners' to weigh against what they published (sync.contract.count_moved).
    counts.clear()
    health.contact_ok(info(record_count=11), drift_seconds=0.9)
    assert published == ["online"] and counts == [11]
    health.contact_failed("timeout", "no answer")
    assert published == ["online", "degraded"] and counts == [11]


def test_a_broken_listener_does_not_stop_the_others() -> None:
    health, seen, _ = make()

    def broken(_: FaultTransition) -> None:
        raise RuntimeError("boom")

    health.faults.on_transition.insert(0, broken)
    health.contact_failed("timeout", "no answer")
    assert codes(seen) == [("timeout", True)]


def test_silent_counts_working_hours_only() -> None:
    calendar = WorkingCalendar.build(
        zone="UTC", days=["mon", "tue", "wed", "thu", "fri"], start=dt.time(8), end=dt.time(18)
    )
    health, seen, clock = make(Thresholds(silent_hours=2, fault_hold_seconds=0), calendar=calendar)
    health.contact_ok(info(), drift_seconds=0)  # Monday 09:00
    health.punches_stored(T0)
    clock.advance(3600 * 1.5)
    health.contact_ok(info(), drift_seconds=0)
    assert "silent" not in health.faults.active
    clock.advance(3600)  # 11:30: 2.5 working hours
    health.contact_ok(info(), drift_seconds=0)
    assert "silent" in health.faults.active
    health.punches_stored(clock.now)
    assert codes(seen) == [("silent", True), ("silent", False)]
    # Friday 17:00 -> Monday 09:00 is only two working hours: quiet weekend, not silent.
    clock.now = dt.datetime(2024, 3, 8, 17, 0, tzinfo=dt.UTC)
    health.punches_stored(clock.now)
    clock.now = dt.datetime(2024, 3, 11, 8, 59, tzinfo=dt.UTC)
    health.contact_ok(info(), drift_seconds=0)
    assert "silent" not in health.faults.active


def test_a_punch_from_a_clock_running_ahead_does_not_buy_silence() -> None:
    health, _, clock = make(Thresholds(silent_hours=1))
    health.punches_stored(clock.now + dt.timedelta(days=3))
    assert health.last_punch_at == clock.now


def test_clock_correction_notice() -> None:
    health, _, _ = make()
    notices: list[Notice] = []
    health.on_notice.append(notices.append)
    health.clock_corrected(drift_seconds=120, detail="set")
    assert health.clock_corrections_total == 1
    assert [(n.event, n.code, n.severity.value) for n in notices] == [
        ("clock_corrected", "clock_drift", "info")
    ]
