"""`[health]` (and each terminal's `health` override): the thresholds that raise device faults."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from punchgate.drivers.config import StrictTyped, config_problems


class HealthSettings(StrictTyped):
    """Thresholds for device faults; each terminal may override them."""

    log_full_ratio: float = Field(0.9, gt=0, le=1, description="records/capacity that raises log_nearly_full")
    clock_drift_seconds: float = Field(60, gt=0, description="drift that raises clock_drift")
    offline_after_failures: int = Field(3, ge=1, description="failed contacts before a device is offline")
    silent_hours: float = Field(0, ge=0, description="hours without punches on a working day; 0 disables")
    broker_grace_seconds: float = Field(
        60, ge=0, description="how long the broker may be unreachable before /healthz answers 503"
    )
    clock_correct_max_seconds: float = Field(
        0, ge=0, description="correct drift only below this many seconds; 0 disables correction"
    )
    clock_correct_min_seconds: float = Field(
        30, ge=1, description="correct drift only above this many seconds (smaller drift is left alone)"
    )
    gateway_clock: Literal["check", "trust"] = Field(
        "check",
        description="check: correct terminal clocks only while the system reports its own clock "
        "synchronised (timedatectl, timesyncd, adjtimex); trust: skip that check",
    )
    work_days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        ["mon", "tue", "wed", "thu", "fri"], description="working days of the calendar used by silent"
    )
    work_start: dt.time = Field(dt.time(8, 0), description="start of the working day, terminal-local")
    work_end: dt.time = Field(
        dt.time(18, 0),
        description="end of the working day, terminal-local (00:00 means midnight; "
        "an end before the start is a night shift, e.g. 22:00 to 06:00)",
    )
    holidays: list[dt.date] = Field([], description="dates that are not working days")
    fault_hold_seconds: float = Field(
        600,
        ge=0,
        description="one-off faults (log_reset, device_replaced, protocol_error) stay active this long "
        "after they were last seen, so people get to see them",
    )
    max_pending_age_seconds: float = Field(
        3600, ge=0, description="oldest undelivered punch age that raises delivery_delayed; 0 disables"
    )

    @model_validator(mode="after")
    def _correction_bounds(self) -> HealthSettings:
        bounded = self.clock_correct_max_seconds
        if bounded and bounded <= self.clock_correct_min_seconds:
            raise ValueError("clock_correct_max_seconds must be above clock_correct_min_seconds (or 0)")
        return self

    @model_validator(mode="after")
    def _working_day_has_hours(self) -> HealthSettings:
        # The calendar reads an end before the start as a night shift and 00:00-00:00 as round the
        # clock, so the one window that cannot be meant is a day that ends when it starts.
        start, end = self.work_start, self.work_end
        if start == end and end != dt.time(0):
            raise config_problems(
                "HealthSettings",
                [
                    (
                        ("work_end",),
                        f"the working day ends when it starts ({end:%H:%M}): write the end of the day, "
                        "or work_start = 00:00:00 and work_end = 00:00:00 for round the clock",
                    )
                ],
            )
        return self
