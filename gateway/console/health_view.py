"""The status (`/api/devices`' JSON) as people read it: the root cause first, with what to do.

Shared by the console's pages and `punchgate status`; plain data in, plain data out, no web
library, so the CLI can import it cheaply.

Root cause first: a terminal that cannot be reached is also silent and shows no drift worth
trusting, so the fault that explains the others leads (`CAUSE_ORDER`: faults that stop reading
first, then those about what the terminal is, then its log, then its clock, then silence); on
the gateway, a full disk, then the broker, which is why the buffer fills and delivery waits.
Ties go to the fault active longest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from punchgate.gateway.faults import CATALOGUE, WHAT_TO_DO

CAUSE_ORDER: tuple[str, ...] = (
    # terminals: cannot read at all
    "unreachable",
    "unsupported",
    "auth_failed",
    "timeout",
    # what the terminal is, and whether its times can be believed
    "device_replaced",
    "clock_invalid",
    "stuck_disabled",
    "log_reset",
    "protocol_error",
    "log_nearly_full",
    "clock_drift",
    "silent",
    # the gateway
    "disk_low",
    "broker_unreachable",
    "buffer_full",
    "delivery_delayed",
    "unknown_terminal",
)
_RANK = {code: i for i, code in enumerate(CAUSE_ORDER)}
STATE_ORDER = {"offline": 0, "degraded": 1, "online": 2}


def parse_utc(value: Any) -> dt.datetime | None:
    """An aware UTC datetime from the JSON's ISO 8601 text (or a datetime); None if absent/bad."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_text(value: Any, tz: ZoneInfo, *, seconds: bool = True) -> str:
    """`2026-11-30 19:35:53` in `tz`; "" when there is no time."""
    when = parse_utc(value)
    if when is None:
        return ""
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def zone_label(tz: ZoneInfo, now: dt.datetime | None = None) -> str:
    """`Asia/Shanghai (UTC+08:00)`: the zone named, with its offset now."""
    offset = (now or dt.datetime.now(dt.UTC)).astimezone(tz).strftime("%z")
    return f"{tz.key} (UTC{offset[:3]}:{offset[3:]})"


def duration_parts(seconds: float) -> tuple[int, int, int, int]:
    """(days, hours, minutes, seconds) of a non-negative duration."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return days, hours, minutes, secs


def short_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`: units as in the rest of punchgate's messages."""
    days, hours, minutes, secs = duration_parts(seconds)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


@dataclass(frozen=True)
class FaultView:
    code: str
    severity: str
    summary: str
    detail: str
    since: dt.datetime | None
    what_to_do: str


@dataclass(frozen=True)
class TerminalView:
    name: str
    state: str
    faults: list[FaultView]
    last_punch: dt.datetime | None
    last_contact: dt.datetime | None
    drift_seconds: float | None
    records: int | None
    capacity: int | None
    pending: int
    last_error: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> FaultView | None:
        return self.faults[0] if self.faults else None

    @property
    def fill_percent(self) -> int | None:
        if not self.capacity or self.records is None:
            return None
        return round(100 * self.records / self.capacity)


@dataclass(frozen=True)
class GatewayView:
    gateway_id: str
    site: str
    broker_connected: bool
    pending: int
    oldest_pending_age: float | None
    faults: list[FaultView]
    clock_synchronised: bool | None
    clock_source: str
    healthy: bool
    started_at: dt.datetime | None


def fault_view(fault: dict[str, Any]) -> FaultView:
    code = str(fault.get("code", ""))
    kind = CATALOGUE.get(code)
    return FaultView(
        code=code,
        severity=str(fault.get("severity") or (kind.severity.value if kind else "warning")),
        summary=kind.summary if kind else code,
        detail=str(fault.get("detail") or ""),
        since=parse_utc(fault.get("since")),
        what_to_do=WHAT_TO_DO.get(code, ""),
    )


def root_cause_first(faults: list[dict[str, Any]]) -> list[FaultView]:
    views = [fault_view(f) for f in faults]
    far_future = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(views, key=lambda f: (_RANK.get(f.code, len(_RANK)), f.since or far_future))


def terminal_view(device: dict[str, Any]) -> TerminalView:
    keep = ("serial_number", "model", "firmware", "platform", "user_count", "user_capacity")
    return TerminalView(
        name=str(device["device"]),
        state=str(device.get("state", "offline")),
        faults=root_cause_first(list(device.get("faults") or [])),
        last_punch=parse_utc(device.get("last_punch_at")),
        last_contact=parse_utc(device.get("last_contact")),
        drift_seconds=device.get("clock_drift_seconds"),
        records=device.get("record_count"),
        capacity=device.get("record_capacity"),
        pending=int(device.get("pending") or 0),
        last_error=str(device.get("last_error") or ""),
        info={key: device.get(key) for key in keep},
    )


def terminal_views(status: dict[str, Any], *, worst_first: bool = True) -> list[TerminalView]:
    """Every terminal; offline ones first, then degraded, then online (config order within)."""
    views = [terminal_view(d) for d in status.get("devices") or []]
    if worst_first:
        views.sort(key=lambda v: STATE_ORDER.get(v.state, 0))
    return views


def gateway_view(status: dict[str, Any]) -> GatewayView:
    gateway = status["gateway"]
    return GatewayView(
        gateway_id=str(gateway.get("gateway_id", "")),
        site=str(gateway.get("site") or ""),
        broker_connected=bool(gateway.get("broker_connected")),
        pending=int(gateway.get("pending") or 0),
        oldest_pending_age=gateway.get("oldest_pending_age_seconds"),
        faults=root_cause_first(list(gateway.get("faults") or [])),
        clock_synchronised=gateway.get("clock_synchronised"),
        clock_source=str(gateway.get("clock_sync_source") or "?"),
        healthy=bool(gateway.get("healthy", True)),
        started_at=parse_utc(gateway.get("started_at")),
    )


def drift_text(drift: float | None) -> str:
    return "—" if drift is None else f"{round(drift):+d} s"  # never "-0 s"


def fill_text(view: TerminalView) -> str:
    if not view.capacity:
        return "—"
    return f"{view.records}/{view.capacity} ({view.fill_percent} %)"
