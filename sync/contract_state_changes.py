"""Retained device states (docs/mqtt-contract.md, "Device state"): what counts as a change, and when to publish.

Retained device states are published on change only (`publish_due`), and refreshed at least
every `STATE_REFRESH_SECONDS` so that their `as_of` tells a live state from a stale one.
"""

from __future__ import annotations

from punchgate.sync.contract_states import DeviceState

STATE_REFRESH_SECONDS = 600.0  # republished at least this often while connected, so `as_of` stays fresh
DRIFT_BAND_SECONDS = 5.0  # clock drift moving less than this is not a change
COUNT_BAND_SHARE = 0.01  # a record/user count moving less than 1 % of its capacity is not a change
COUNT_BAND_UNKNOWN_CAPACITY = 100  # ... or less than this many when the capacity is unknown


# Fields whose every change is published (faults, counts and drift are compared below).
_CHANGE_EXACT = (
    "device",
    "gateway",
    "state",
    "serial_number",
    "model",
    "firmware",
    "platform",
    "record_capacity",
    "user_capacity",
)


def count_moved(old: int | None, new: int | None, capacity: int | None) -> bool:
    """A record or user count moved far enough from the published one to publish again."""
    if old is None or new is None:
        return old != new
    band = max(1.0, capacity * COUNT_BAND_SHARE) if capacity else COUNT_BAND_UNKNOWN_CAPACITY
    return abs(new - old) >= band


def _drift_moved(old: float | None, new: float | None) -> bool:
    if old is None or new is None:
        return old != new
    return abs(new - old) >= DRIFT_BAND_SECONDS


def state_changed(published: DeviceState, current: DeviceState) -> bool:
    """True when `current` differs from the last `published` state in a way a consumer must see.

    A change: the state, the set of fault codes or their severities, the terminal's identity
    (serial number, model, firmware, platform), a capacity, a record or user count moving by
    1 % of its capacity (100 when the capacity is unknown), the clock drift moving by 5 s, or
    any of these appearing or disappearing. Not a change: the contact time, `as_of`, a fault's
    wording or `since`, `last_error` on its own, and smaller moves of counts and drift. The
    periodic refresh carries those.
    """
    if any(getattr(published, name) != getattr(current, name) for name in _CHANGE_EXACT):
        return True
    if {(f.code, f.severity) for f in published.faults} != {(f.code, f.severity) for f in current.faults}:
        return True
    return (
        _drift_moved(published.clock_drift_seconds, current.clock_drift_seconds)
        or count_moved(published.record_count, current.record_count, current.record_capacity)
        or count_moved(published.user_count, current.user_count, current.user_capacity)
    )


def publish_due(
    published: DeviceState | None, current: DeviceState, *, refresh_seconds: float = STATE_REFRESH_SECONDS
) -> bool:
    """Should `current` be published? On the first state, on a change (`state_changed`), and once
    the last publish is `refresh_seconds` old (measured on `as_of`), so `as_of` stays meaningful."""
    if published is None or state_changed(published, current):
        return True
    return (current.as_of - published.as_of).total_seconds() >= refresh_seconds
