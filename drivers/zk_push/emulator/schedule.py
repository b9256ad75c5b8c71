"""When an emulated push terminal talks to the server, from the handshake's option block.

Pure functions of the `ServerOptions` (None before the first handshake), the terminal's own
settings and overrides, and the time: how often it sends a heartbeat (Delay, or the
heartbeat_flood fault's interval), how long it waits after a failure (ErrorDelay), whether it
pushes each record at once (Realtime), and, when it does not, when it looks for new records
next (TransInterval, TransTimes).
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta

from punchgate.drivers.zk_push.emulator.faults import FaultValue, number
from punchgate.drivers.zk_push.emulator.wire import ServerOptions, TransFlag

DEFAULT_WAIT = 30.0  # seconds: Delay and ErrorDelay before any handshake


def pushes_at_once(options: ServerOptions | None, own_setting: bool) -> bool:
    """Realtime: the server's word when it said one, else the terminal's own setting."""
    if options is not None and options.realtime is not None:
        return options.realtime
    return own_setting


def tables_to_push(options: ServerOptions | None) -> TransFlag:
    return options.trans_flag if options is not None else TransFlag()


def heartbeat_interval(
    options: ServerOptions | None, override: float | None, flood: dict[str, FaultValue] | None
) -> float:
    """Seconds between heartbeats: the flood fault's, the override, the server's Delay."""
    if flood is not None:
        return number(flood, "interval", 0.01)
    if override is not None:
        return override
    return options.delay if options is not None else DEFAULT_WAIT


def error_delay(options: ServerOptions | None, override: float | None) -> float:
    """Seconds to wait after a failed request before starting over: ErrorDelay."""
    if override is not None:
        return override
    return options.error_delay if options is not None else DEFAULT_WAIT


def next_scheduled_upload(options: ServerOptions | None, loop_now: float, now: datetime) -> float:
    """When a terminal without realtime pushes looks for new records next (loop time);
    `now` is the terminal's wall clock, for TransTimes."""
    if options is None:
        return math.inf
    candidates = [math.inf]
    if options.trans_interval_minutes > 0:
        candidates.append(loop_now + options.trans_interval_minutes * 60)
    if options.trans_times:
        candidates.append(loop_now + seconds_until(options.trans_times, now))
    return min(candidates)


def seconds_until(times: tuple[time, ...], now: datetime) -> float:
    """Seconds from `now` to the next of the daily `times`."""
    waits = []
    for moment in times:
        at = datetime.combine(now.date(), moment)
        if at <= now:
            at += timedelta(days=1)
        waits.append((at - now).total_seconds())
    return min(waits)
