"""The faults an emulated terminal can be told to show, switchable while it runs.

Each one reproduces something users of ZK gateways report from the field (zk.md, last
section). `set_fault(name, **params)` switches one on; `clear_fault(name)` switches it off.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

Fault = Literal[
    "refuse_connections",  # nothing listens: TCP connects are refused, UDP goes unanswered
    "hang",  # connections are accepted, requests read, and never answered
    "slow_replies",  # every reply waits `delay` seconds (default 2.0)
    "drop_mid_transfer",  # a bulk transfer stops after `after_packets` CMD_DATA packets (default 2)
    "garbage_replies",  # replies are replaced by random bytes; `count` replies (default: all)
    "truncated_replies",  # replies are cut in half; `count` replies (default: all)
    "short_read",  # counts claim every record but bulk reads leave off the newest `missing` (1)
    "comm_key_changed",  # the terminal's comm key becomes `key` (default: old key + 1)
    "dead_battery",  # the clock restarts at 2000-01-01 00:00:00
    "clock_drift",  # the clock jumps `offset` seconds (default 0) and drifts `rate` s/s (0.001)
    "log_full",  # record capacity shrinks to the current count: new punches are refused
    "log_cleared",  # one-shot: the attendance log is erased behind the gateway's back
    "serial_changed",  # the terminal reports `serial` (default: old serial + "R"): replaced
    "stays_disabled",  # the terminal stays disabled after a session ends
    "restart",  # one-shot: drops the session; `silent` (True) leaves TCP half-open; `downtime` s
]

FAULTS: Final[tuple[str, ...]] = get_args(Fault)
ONE_SHOT_FAULTS: Final = frozenset({"log_cleared", "restart"})

_ALLOWED_PARAMS: Final[dict[str, frozenset[str]]] = {
    "refuse_connections": frozenset(),
    "hang": frozenset(),
    "slow_replies": frozenset({"delay"}),
    "drop_mid_transfer": frozenset({"after_packets"}),
    "garbage_replies": frozenset({"count"}),
    "truncated_replies": frozenset({"count"}),
    "short_read": frozenset({"missing"}),
    "comm_key_changed": frozenset({"key"}),
    "dead_battery": frozenset(),
    "clock_drift": frozenset({"rate", "offset"}),
    "log_full": frozenset(),
    "log_cleared": frozenset(),
    "serial_changed": frozenset({"serial"}),
    "stays_disabled": frozenset(),
    "restart": frozenset({"silent", "downtime"}),
}


def check_fault(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError for an unknown fault or parameter, naming what is allowed."""
    if name not in _ALLOWED_PARAMS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    unknown = set(params) - _ALLOWED_PARAMS[name]
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED_PARAMS[name])) or "none"
        raise ValueError(
            f"fault {name!r} takes no parameter {', '.join(sorted(unknown))} (allowed: {allowed})"
        )
