"""Terminals with the same working calendar share one (it is frozen): a 5,000-terminal gateway
holds one, not 5,000 equal copies; a different zone or week is a calendar of its own."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from punchgate.gateway.health import Thresholds, calendar_for
from punchgate.gateway.settings_health import HealthSettings


def test_equal_calendars_are_one_object_and_different_ones_are_not() -> None:
    week = HealthSettings.model_validate({"work_days": ["mon", "tue"], "holidays": [dt.date(2026, 12, 25)]})
    same = HealthSettings.model_validate({"work_days": ["mon", "tue"], "holidays": [dt.date(2026, 12, 25)]})
    other = HealthSettings.model_validate({"work_days": ["mon"]})
    shared = calendar_for(week, "Europe/Berlin")
    assert calendar_for(same, "Europe/Berlin") is shared
    assert calendar_for(week, "Asia/Tokyo") is not shared
    assert calendar_for(week, "Asia/Tokyo").zone.key == "Asia/Tokyo"
    assert calendar_for(other, "Europe/Berlin").days == frozenset({"mon"})
    assert shared.holidays == frozenset({dt.date(2026, 12, 25)})


def test_equal_thresholds_are_one_frozen_object_with_the_same_values() -> None:
    site = HealthSettings.model_validate({"clock_drift_seconds": 120, "log_full_ratio": 0.8})
    same = HealthSettings.model_validate({"clock_drift_seconds": 120, "log_full_ratio": 0.8})
    other = HealthSettings.model_validate({"clock_drift_seconds": 30})
    shared = Thresholds.from_settings(site)
    assert Thresholds.from_settings(same) is shared
    assert Thresholds.from_settings(other) is not shared
    assert shared == Thresholds(
        log_full_ratio=0.8,
        log_full_clear_ratio=max(0.0, 0.8 - 0.05),
        clock_drift_seconds=120,
        clock_drift_clear_seconds=120 * 0.75,
        offline_after_failures=site.offline_after_failures,
        silent_hours=site.silent_hours,
        fault_hold_seconds=site.fault_hold_seconds,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        shared.silent_hours = 4.0  # type: ignore[misc]  # shared: nobody may change it
