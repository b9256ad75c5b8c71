"""The working calendar and the clock-care policy (pure logic; the system probes are injected)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from punchgate.gateway.calendar import WorkingCalendar
from punchgate.gateway.clock import CorrectionPolicy, GatewayClock, SyncStatus, system_clock_status

UTC = dt.UTC


def at(year: int, month: int, day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


def office(zone: str = "UTC", **kwargs: object) -> WorkingCalendar:
    options: dict[str, object] = {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": dt.time(8),
        "end": dt.time(18),
    }
    options.update(kwargs)
    return WorkingCalendar.build(zone=zone, **options)  # type: ignore[arg-type]


def test_working_seconds_within_one_day() -> None:
    assert office().working_seconds(at(2024, 3, 4, 7), at(2024, 3, 4, 9)) == 3600  # Monday
    assert office().working_seconds(at(2024, 3, 4, 17), at(2024, 3, 4, 20)) == 3600


def test_weekends_and_holidays_do_not_count() -> None:
    friday_noon, monday_noon = at(2024, 3, 8, 12), at(2024, 3, 11, 12)
    assert office().working_seconds(friday_noon, monday_noon) == 10 * 3600
    holiday = office(holidays=[dt.date(2024, 3, 11)])
    assert holiday.working_seconds(friday_noon, monday_noon) == 6 * 3600


def test_days_are_the_terminals_local_days() -> None:
    # 07:00 UTC is 08:00 in Berlin (winter): the working day there has begun.
    assert office("Europe/Berlin").working_seconds(at(2024, 3, 4, 7), at(2024, 3, 4, 8)) == 3600
    assert office("UTC").working_seconds(at(2024, 3, 4, 7), at(2024, 3, 4, 8)) == 0


def test_round_the_clock_and_overnight_windows() -> None:
    always = office(days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start=dt.time(0), end=dt.time(0))
    assert always.working_seconds(at(2024, 3, 9, 0), at(2024, 3, 10, 0)) == 86400
    night = office(start=dt.time(22), end=dt.time(6))
    # Monday 22:00 to Tuesday 06:00 is one shift; Tuesday 02:00-03:00 is inside Monday's shift.
    assert night.working_seconds(at(2024, 3, 5, 2), at(2024, 3, 5, 3)) == 3600


def test_dst_day_counts_real_hours() -> None:
    always = office("Europe/Berlin", days=["sun"], start=dt.time(0), end=dt.time(0))
    # 31 March 2024: Berlin springs forward, the day has 23 hours.
    start = dt.datetime(2024, 3, 31, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert always.working_seconds(start, start + dt.timedelta(days=2)) == 23 * 3600


def test_a_very_old_start_is_capped_not_slow() -> None:
    seconds = office().working_seconds(at(1800, 1, 1), at(2024, 3, 4, 12))
    assert 2000 * 3600 < seconds < 2700 * 3600


def test_unknown_day_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown day names"):
        office(days=["monday"])


# --- clock care --------------------------------------------------------------------------

SYNCED = SyncStatus(True, "timedatectl", "NTPSynchronized=yes")


@pytest.mark.parametrize(
    ("drift", "sync", "expected", "reason"),
    [
        (10.0, SYNCED, False, "within"),
        (-120.0, SYNCED, True, "synchronised"),
        (120.0, SYNCED, True, "synchronised"),
        (4000.0, SYNCED, False, "beyond"),
        (None, SYNCED, False, "unknown or invalid"),
        (120.0, SyncStatus(False, "timedatectl", "NTPSynchronized=no"), False, "not synchronised"),
        (120.0, SyncStatus(None, "none", "nothing"), False, "sync status unknown"),
    ],
)
def test_correction_is_bounded_and_needs_a_synchronised_gateway(
    drift: float | None, sync: SyncStatus, expected: bool, reason: str
) -> None:
    correct, why = CorrectionPolicy(min_seconds=30, max_seconds=3600).decide(drift, sync)
    assert correct is expected
    assert reason in why


def test_correction_disabled_by_default_bound() -> None:
    assert CorrectionPolicy(min_seconds=30, max_seconds=0).decide(120, SYNCED) == (
        False,
        "clock correction disabled",
    )


def test_sync_status_prefers_timedatectl(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    status = system_clock_status(run=lambda argv: "no\n", timesync_flag=flag, kernel_state=lambda: 0)
    assert status == SyncStatus(False, "timedatectl", "NTPSynchronized=no")


def test_sync_status_falls_back_to_timesyncd_then_the_kernel(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    no_command = system_clock_status(run=lambda argv: None, timesync_flag=flag, kernel_state=lambda: 5)
    assert (no_command.synchronised, no_command.source) == (False, "adjtimex")
    flag.touch()
    with_flag = system_clock_status(run=lambda argv: None, timesync_flag=flag, kernel_state=lambda: 5)
    assert (with_flag.synchronised, with_flag.source) == (True, "timesyncd")
    ok_kernel = system_clock_status(run=lambda argv: "", timesync_flag=tmp_path / "x", kernel_state=lambda: 0)
    assert (ok_kernel.synchronised, ok_kernel.source) == (True, "adjtimex")


def test_sync_status_unknown_when_nothing_answers(tmp_path: Path) -> None:
    status = system_clock_status(
        run=lambda argv: None, timesync_flag=tmp_path / "x", kernel_state=lambda: None
    )
    assert status.synchronised is None
    assert "no time sync status" in status.detail


def test_gateway_clock_caches_and_trust_mode_skips_the_probe() -> None:
    calls: list[int] = []

    def probe() -> SyncStatus:
        calls.append(1)
        return SYNCED

    checked = GatewayClock("check", probe=probe, cache_seconds=60)
    assert checked.status() == checked.status() == SYNCED
    assert len(calls) == 1
    trusted = GatewayClock("trust", probe=probe)
    assert trusted.status().synchronised is True
    assert len(calls) == 1


def test_real_system_probe_answers_something() -> None:
    # Whatever this host says, the answer is well-formed and never silently "synchronised"
    # without a source that said so.
    status = system_clock_status()
    assert status.source in ("timedatectl", "timesyncd", "adjtimex", "none")
    assert (status.synchronised is None) == (status.source == "none")
