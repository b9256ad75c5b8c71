"""Gateway and device state payloads: the retained states, device events and the audit chain's head."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import ConfigDict, Field

from punchgate.sync.contract_markers import COMPLETE_KEY, Payload, names_from
from punchgate.sync.contract_time import UtcDateTime, utc_now

Severity = Literal["info", "warning", "error", "critical"]


class GatewayState(Payload):
    """Retained on `{base}/state`. The last will publishes just `{"state": "offline"}`."""

    model_config = ConfigDict(json_schema_extra={COMPLETE_KEY: False})  # offline omits the rest

    state: Literal["online", "offline"] = Field(description="online while connected")
    version: str | None = Field(default=None, description="gateway software version (online only)")
    started_at: UtcDateTime | None = Field(
        default=None, description="when the gateway process started (online only)"
    )
    # Delivery figures (additions to v1, online only): republished while connected when they change.
    as_of: UtcDateTime | None = Field(
        default=None, description="when the gateway built this state (with the delivery figures only)"
    )
    delivery: Literal["broker", "central"] | None = Field(
        default=None,
        description="delivery mode: broker (delivered at the broker's PUBACK) or central (delivered when "
        "a consumer confirms it stored the punch)",
    )
    pending: int | None = Field(
        default=None, ge=0, description="punches in the buffer not delivered yet (central: not confirmed)"
    )
    unconfirmed: int | None = Field(
        default=None,
        ge=0,
        description="central: punches sent and waiting for a confirmation (0 in broker mode)",
    )
    oldest_unconfirmed_age_seconds: float | None = Field(
        default=None,
        ge=0,
        description="central: seconds since the oldest unconfirmed punch was stored at the gateway; "
        "null when none",
    )


class Fault(Payload):
    code: str = Field(
        description="stable fault code from the catalogue (docs/health.md)",
        json_schema_extra=names_from("device_faults"),
    )
    severity: Severity = Field(
        description="info, warning, error or critical", json_schema_extra=names_from("severities")
    )
    detail: str = Field(description="human-readable detail")
    since: UtcDateTime = Field(description="when the fault was raised")


class DeviceState(Payload):
    """Retained on `{base}/devices/{device}/state`: the terminal's health snapshot, published on
    change and refreshed every 10 minutes; stale once `as_of` is old or the gateway is offline."""

    device: str = Field(description="configured name of the terminal")
    gateway: str = Field(
        default="",
        description="id of the gateway that published this state (an addition to v1: absent from "
        "states retained by older gateways)",
    )
    as_of: UtcDateTime = Field(
        default_factory=utc_now,
        description="when the gateway built this snapshot, ISO 8601 UTC; republished at least every 10 "
        "minutes while the gateway is connected (an addition to v1: absent from states retained by "
        "older gateways)",
    )
    state: Literal["online", "degraded", "offline"] = Field(description="overall health")
    faults: list[Fault] = Field(description="active faults")
    last_contact: UtcDateTime | None = Field(description="last successful contact")
    last_error: str | None = Field(default=None, description="last contact error, if any")
    clock_drift_seconds: float | None = Field(description="terminal clock minus gateway clock")
    serial_number: str | None = Field(description="terminal serial number")
    model: str | None = Field(default=None, description="terminal model")
    firmware: str | None = Field(default=None, description="terminal firmware version")
    platform: str | None = Field(default=None, description="terminal platform")
    record_count: int | None = Field(default=None, description="attendance records held by the terminal")
    record_capacity: int | None = Field(default=None, description="attendance record capacity")
    user_count: int | None = Field(default=None, description="users enrolled")
    user_capacity: int | None = Field(default=None, description="user capacity")

    def model_post_init(self, context: Any, /) -> None:
        """States that set the same fields share one set of their names (pydantic's
        `model_fields_set`, about 730 bytes): the gateway keeps each terminal's last published
        state for as long as it runs (issue 18). Safe because payloads are frozen: pydantic
        changes a model's set in place only on assignment, which a frozen model refuses;
        `model_copy` and `copy` give the copy a set of its own first."""
        names = self.__pydantic_fields_set__
        shared = _SHARED_FIELDS_SETS.setdefault(frozenset(names), names)
        if shared is not names:
            object.__setattr__(self, "__pydantic_fields_set__", shared)


# The distinct `model_fields_set`s of device states (`DeviceState.model_post_init`): a few.
_SHARED_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class AuditHead(Payload):
    """Retained on `{base}/audit`: the newest entry of the buffer's audit chain (docs/audit.md).

    Keep the latest one (or every one): `punchgate audit verify --head FILE` proves the buffer
    still holds the chain that led to it, so a truncated or rewritten buffer cannot pass."""

    gateway: str = Field(description="id of the gateway whose buffer holds the chain")
    seq: int = Field(ge=1, description="the entry's number: the chain's entries are numbered 1, 2, 3, ...")
    hash: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (hex) of the previous entry's hash followed by this entry's canonical JSON",
    )
    kind: str = Field(description="what the entry records (punches, manual_approved, replay, ...)")
    at: UtcDateTime = Field(description="when the entry was appended")
    as_of: UtcDateTime = Field(description="when the gateway published this head")


class DeviceEvent(Payload):
    """On `{base}/devices/{device}/events`: a fault raised or cleared, or a clock correction."""

    device: str = Field(description="configured name of the terminal, or empty for the gateway itself")
    event: Literal["fault_raised", "fault_cleared", "clock_corrected"] = Field(description="what happened")
    code: str = Field(
        description="fault code (clock_drift for a correction)", json_schema_extra=names_from("fault_codes")
    )
    severity: Severity = Field(
        description="severity of the fault", json_schema_extra=names_from("severities")
    )
    detail: str = Field(description="human-readable detail")
    time: UtcDateTime = Field(description="when it happened")


def gateway_online(*, version: str, started_at: dt.datetime, **figures: Any) -> bytes:
    """The retained online state; `figures` adds the delivery figures (as_of, delivery, pending,
    unconfirmed, oldest_unconfirmed_age_seconds), and a field left None is not sent."""
    state = GatewayState(state="online", version=version, started_at=started_at, **figures)
    return state.model_dump_json(exclude_none=not figures).encode()


def gateway_offline() -> bytes:
    """The retained offline state, as the last will publishes it."""
    return GatewayState(state="offline").model_dump_json(exclude_none=True).encode()
