"""What switching a fault on or off does to a running terminal.

One-shot faults (`log_cleared`, `restart`) act once and are not kept. Lasting faults are
recorded in `ActiveFaults`; some also change state when switched on (the clock, the
record capacity, the listeners) and put it back when switched off, keeping the originals
in `ActiveFaults.saved`. Faults that only alter replies need no effect here: the request
cycle and `transmit` consult them as they go.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, Final

from punchgate.drivers.zk.emulator.context import TerminalContext
from punchgate.drivers.zk.emulator.faults import ONE_SHOT_FAULTS, check_fault
from punchgate.drivers.zk.emulator.restart import restart

DEAD_BATTERY_TIME = dt.datetime(2000, 1, 1)

_SwitchOn = Callable[[TerminalContext, dict[str, Any]], Awaitable[None]]
_SwitchOff = Callable[[TerminalContext], Awaitable[None]]


async def apply_fault(ctx: TerminalContext, name: str, params: dict[str, Any]) -> None:
    """Switch fault `name` on with `params` (checked against the catalogue in `faults`)."""
    check_fault(name, params)
    ctx.log.warning("zk_fault_set", fault=name, **params)
    one_shot = _ONE_SHOTS.get(name)
    if one_shot is not None:
        await one_shot(ctx, params)
        return
    effect = _ON_SWITCH_ON.get(name)
    if effect is not None:
        await effect(ctx, params)
    ctx.faults.switch_on(name, params)


async def lift_fault(ctx: TerminalContext, name: str) -> None:
    """Switch fault `name` off and restore what it changed. One-shot faults need no clearing."""
    check_fault(name, {})
    if name in ONE_SHOT_FAULTS or name not in ctx.faults:
        return
    ctx.faults.switch_off(name)
    ctx.log.warning("zk_fault_cleared", fault=name)
    effect = _ON_SWITCH_OFF.get(name)
    if effect is not None:
        await effect(ctx)


# -- one-shot faults ------------------------------------------------------------------------


async def _clear_log_behind_back(ctx: TerminalContext, params: dict[str, Any]) -> None:
    dropped = ctx.terminal.data.clear_log()
    ctx.log.warning("zk_log_cleared_behind_back", dropped=dropped)


async def _restart(ctx: TerminalContext, params: dict[str, Any]) -> None:
    await restart(ctx, silent=bool(params.get("silent", True)), downtime=float(params.get("downtime", 0)))


# -- switching a lasting fault on -----------------------------------------------------------


async def _change_comm_key(ctx: TerminalContext, params: dict[str, Any]) -> None:
    params.setdefault("key", ctx.configured_comm_key + 1)


async def _change_serial(ctx: TerminalContext, params: dict[str, Any]) -> None:
    params.setdefault("serial", ctx.configured_serial + "R")


async def _kill_battery(ctx: TerminalContext, params: dict[str, Any]) -> None:
    clock = ctx.terminal.clock
    ctx.faults.saved.setdefault("clock_offset", clock.offset)
    clock.set(DEAD_BATTERY_TIME)


async def _drift_clock(ctx: TerminalContext, params: dict[str, Any]) -> None:
    clock = ctx.terminal.clock
    ctx.faults.saved.setdefault("clock_offset", clock.offset)
    ctx.faults.saved.setdefault("clock_drift", clock.drift_rate)
    clock.set_offset(clock.offset + dt.timedelta(seconds=float(params.get("offset", 0))))
    clock.set_drift(float(params.get("rate", 0.001)))


async def _fill_log(ctx: TerminalContext, params: dict[str, Any]) -> None:
    data = ctx.terminal.data
    ctx.faults.saved.setdefault("record_capacity", data.record_capacity)
    data.record_capacity = data.record_count


async def _stop_listening(ctx: TerminalContext, params: dict[str, Any]) -> None:
    await ctx.server.close_listeners(hold_ports=True)


# -- switching a lasting fault off ----------------------------------------------------------


async def _restore_clock(ctx: TerminalContext) -> None:
    # The clock is restored only when neither clock fault remains on.
    saved = ctx.faults.saved
    if "clock_offset" not in saved or "dead_battery" in ctx.faults or "clock_drift" in ctx.faults:
        return
    ctx.terminal.clock.set_offset(saved.pop("clock_offset"))
    ctx.terminal.clock.set_drift(saved.pop("clock_drift", 0.0))


async def _restore_capacity(ctx: TerminalContext) -> None:
    ctx.terminal.data.record_capacity = ctx.faults.saved.pop("record_capacity")


async def _listen_again(ctx: TerminalContext) -> None:
    if ctx.server.running:
        await ctx.server.open_listeners()


_ONE_SHOTS: Final[dict[str, _SwitchOn]] = {
    "log_cleared": _clear_log_behind_back,
    "restart": _restart,
}
_ON_SWITCH_ON: Final[dict[str, _SwitchOn]] = {
    "comm_key_changed": _change_comm_key,
    "serial_changed": _change_serial,
    "dead_battery": _kill_battery,
    "clock_drift": _drift_clock,
    "log_full": _fill_log,
    "refuse_connections": _stop_listening,
}
_ON_SWITCH_OFF: Final[dict[str, _SwitchOff]] = {
    "dead_battery": _restore_clock,
    "clock_drift": _restore_clock,
    "log_full": _restore_capacity,
    "refuse_connections": _listen_again,
}
