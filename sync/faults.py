"""The gateway's own fault vocabulary: what can be wrong with the buffer or the way to central.

The buffer raises `BUFFER_FULL` / `DISK_LOW`; the gateway's health model raises the others
from the forwarder's state. Codes are part of the MQTT contract (events, retained state): add
new ones, never rename or reuse one. Device faults live in `punchgate.drivers.faults`.
"""

from __future__ import annotations

from enum import StrEnum


class GatewayFault(StrEnum):
    """Faults of the gateway itself (their subject is the gateway, not a terminal)."""

    BUFFER_FULL = "buffer_full"
    DISK_LOW = "disk_low"
    BROKER_UNREACHABLE = "broker_unreachable"
    DELIVERY_DELAYED = "delivery_delayed"
    UNKNOWN_TERMINAL = "unknown_terminal"
    CONFIRMATION_DELAYED = "confirmation_delayed"
