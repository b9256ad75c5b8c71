"""Terminals with the same working calendar share one (it is frozen): a 5,000-terminal gateway
holds one, not 5,000 equal copies; a different zone or week is a calendar of its own."""

from __future__ import annotations

import datetime as dt

from punchgate.gateway.health import calendar_for
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
