"""The device fault vocabulary: one stable code per thing that can be wrong with a terminal.

Drivers raise errors carrying one of these codes; the gateway's health model gives each a
severity and an operator's summary, and metrics, MQTT events and docs/health.md use the same
codes. The codes are part of the MQTT contract: add new ones, never rename or reuse one.
`StrEnum` so a code compares equal to, and serialises as, its plain string.
"""

from __future__ import annotations

from enum import StrEnum


class DeviceFault(StrEnum):
    """Faults of one terminal."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    AUTH_FAILED = "auth_failed"
    PROTOCOL_ERROR = "protocol_error"
    UNSUPPORTED = "unsupported"
    STUCK_DISABLED = "stuck_disabled"
    LOG_NEARLY_FULL = "log_nearly_full"
    LOG_RESET = "log_reset"
    DEVICE_REPLACED = "device_replaced"
    CLOCK_DRIFT = "clock_drift"
    CLOCK_INVALID = "clock_invalid"
    SILENT = "silent"
