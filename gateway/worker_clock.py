"""A terminal's clock as the worker sees it: the drift, and setting it when the policy says so.

The health model judges the drift (clock_drift, clock_invalid); `ClockCare` decides whether
to correct it; this module only measures and, when told to, sets the clock and measures again
(the terminal may ignore us), reporting what it did to the health model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

import structlog

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway.clock import ClockCare
from punchgate.gateway.health import DeviceHealth

log = structlog.get_logger(__name__)


def drift_seconds(info: DeviceInfo, zone: ZoneInfo, now: dt.datetime) -> float | None:
    """Terminal clock minus `now`, in seconds; None when the terminal gave no usable clock."""
    if info.clock is None or info.clock.year < 2000:
        return None
    try:
        terminal_utc = info.clock.replace(tzinfo=zone).astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None
    return (terminal_utc - now).total_seconds()


async def correct_if_due(
    care: ClockCare,
    info: DeviceInfo,
    drift: float | None,
    *,
    zone: ZoneInfo,
    clock: Callable[[], dt.datetime],
    health: DeviceHealth,
    set_time: Callable[[dt.datetime], Awaitable[None]],
    read_info: Callable[[], Awaitable[DeviceInfo]],
) -> tuple[DeviceInfo, float | None]:
    """Set the terminal's clock when the policy says so; the contact and drift after it."""
    correct, why = await care.should_correct(drift)
    if not correct:
        if drift is not None and care.policy.enabled:
            log.debug("clock_not_corrected", drift=round(drift, 1), reason=why)
        return info, drift
    assert drift is not None and info.clock is not None
    target = clock().astimezone(zone).replace(tzinfo=None)
    await set_time(target)
    after = await read_info()  # measure again: the terminal may have ignored us
    new_drift = drift_seconds(after, zone, clock())
    shown = "unknown" if new_drift is None else f"{new_drift:+.0f} s"
    sync = why.rsplit("; ", 1)[-1]  # the policy's reason ends with the clock sync verdict
    detail = (
        f"terminal clock set from {info.clock:%Y-%m-%d %H:%M:%S} to {target:%Y-%m-%d %H:%M:%S} "
        f"(drift was {drift:+.0f} s, now {shown}; {sync})"
    )
    health.clock_corrected(drift_seconds=drift, detail=detail)
    return after, new_drift
