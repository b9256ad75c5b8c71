"""The MQTT payload contract, v1 (docs/mqtt-contract.md): pydantic models and their JSON Schemas.

The models are the single definition of every payload. `docs/schemas/*.json` is generated
from them (`python -m punchgate.sync.contract`) and a test keeps the checked-in files in step.

The forwarder's hot path does not build pydantic objects: a record's JSON is rendered once,
when the punch is stored (`record_json`), and batch envelopes are assembled around those
strings (`batch_json`). Tests assert that this fast path produces exactly what the models
produce and that every payload validates against the schemas.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from punchgate.sync.records import Punch, Source

SCHEMA_NAME = "punchgate.punches"
SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"

Severity = Literal["info", "warning", "error", "critical"]
LOCAL_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"
UTC_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
OFFSET_PATTERN = r"^[+-]\d{2}:\d{2}$"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeName(_Payload):
    """A terminal's raw code and, where known, what it means."""

    code: int = Field(description="the raw code as the terminal reported it")
    name: str | None = Field(description="its meaning (e.g. check-in, fingerprint); null when unknown")


class PunchRecord(_Payload):
    """One punch. `id` is stable across re-reads, restarts and gateways: deduplicate on it."""

    id: str = Field(description="stable record id (hash of serial, user, local time, state, verify)")
    serial: str = Field(description="serial number of the terminal that recorded the punch")
    user_id: str = Field(description="the user's id on the terminal")
    local_time: str = Field(pattern=LOCAL_TIME_PATTERN, description="terminal-local time as read, no offset")
    utc_time: str = Field(pattern=UTC_TIME_PATTERN, description="the UTC instant, ISO 8601 with Z")
    utc_offset: str = Field(pattern=OFFSET_PATTERN, description="offset of local_time from UTC, +HH:MM")
    state: CodeName = Field(description="punch state: check-in, check-out, break-out, break-in, ...")
    verify: CodeName = Field(description="verification: fingerprint, face, card, password, ...")
    work_code: int = Field(description="work code entered at the terminal; 0 when none")
    source: Source = Field(description="poll (full read), live (real-time event) or manual")
    historical: bool = Field(description="true for backlog and replay, false for a punch seen as it happened")
    flags: list[str] = Field(
        description="time flags: dst_fold, dst_gap, before_2000, in_future (the last two mean quarantined)"
    )


class PunchBatch(_Payload):
    """The message on `{base}/devices/{device}/punches`: 1..N records of one terminal, oldest first."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    schema_name: Literal["punchgate.punches"] = Field(alias="schema", description="payload schema name")
    version: Literal[1] = Field(description="payload schema version")
    gateway: str = Field(description="id of the gateway that sent the batch")
    device: str = Field(description="configured name of the terminal")
    seq: int = Field(
        ge=1, description="per-device batch number; strictly increases, may have gaps; not a loss detector"
    )
    records: list[PunchRecord] = Field(min_length=1, description="the punches, oldest first")


class GatewayState(_Payload):
    """Retained on `{base}/state`. The last will publishes just `{"state": "offline"}`."""

    state: Literal["online", "offline"] = Field(description="online while connected")
    version: str | None = Field(default=None, description="gateway software version (online only)")
    started_at: dt.datetime | None = Field(
        default=None, description="when the gateway process started (online only)"
    )


class Fault(_Payload):
    code: str = Field(description="stable fault code from the catalogue (docs/health.md)")
    severity: Severity = Field(description="info, warning, error or critical")
    detail: str = Field(description="human-readable detail")
    since: dt.datetime = Field(description="when the fault was raised")


class DeviceState(_Payload):
    """Retained on `{base}/devices/{device}/state`: the terminal's latest health snapshot."""

    device: str = Field(description="configured name of the terminal")
    state: Literal["online", "degraded", "offline"] = Field(description="overall health")
    faults: list[Fault] = Field(description="active faults")
    last_contact: dt.datetime | None = Field(description="last successful contact")
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


class DeviceEvent(_Payload):
    """On `{base}/devices/{device}/events`: a fault raised or cleared, or a clock correction."""

    device: str = Field(description="configured name of the terminal, or empty for the gateway itself")
    event: Literal["fault_raised", "fault_cleared", "clock_corrected"] = Field(description="what happened")
    code: str = Field(description="fault code (clock_drift for a correction)")
    severity: Severity = Field(description="severity of the fault")
    detail: str = Field(description="human-readable detail")
    time: dt.datetime = Field(description="when it happened")


# ---------------------------------------------------------------------------------------------
# Building payloads


def _utc_iso(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def _record_dict(punch: Punch) -> dict[str, Any]:
    return {
        "id": punch.id,
        "serial": punch.device_serial,
        "user_id": punch.user_id,
        "local_time": punch.local_time.replace(tzinfo=None).isoformat(),
        "utc_time": _utc_iso(punch.utc_time),
        "utc_offset": punch.utc_offset,
        "state": {"code": punch.state, "name": punch.state_name},
        "verify": {"code": punch.verify, "name": punch.verify_name},
        "work_code": punch.work_code,
        "source": punch.source,
        "historical": punch.historical,
        "flags": list(punch.flags),
    }


def punch_to_record(punch: Punch) -> PunchRecord:
    """The contract record for a stored punch."""
    return PunchRecord.model_validate(_record_dict(punch))


def record_json(punch: Punch) -> str:
    """The record's JSON text, rendered without pydantic (called once per punch at insert time)."""
    return json.dumps(_record_dict(punch), ensure_ascii=False, separators=(",", ":"))


def batch_json(*, gateway: str, device: str, seq: int, records: Sequence[str]) -> bytes:
    """A batch envelope around already-rendered record JSON texts (the forwarder's hot path)."""
    head = json.dumps(
        {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "gateway": gateway, "device": device, "seq": seq},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return (head[:-1] + ',"records":[' + ",".join(records) + "]}").encode("utf-8")


def gateway_online(*, version: str, started_at: dt.datetime) -> bytes:
    return GatewayState(state="online", version=version, started_at=started_at).model_dump_json().encode()


def gateway_offline() -> bytes:
    return GatewayState(state="offline").model_dump_json(exclude_none=True).encode()


# ---------------------------------------------------------------------------------------------
# JSON Schemas

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "punch-batch": PunchBatch,
    "punch-record": PunchRecord,
    "gateway-state": GatewayState,
    "device-state": DeviceState,
    "device-event": DeviceEvent,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://punchgate.invalid/schemas/v{SCHEMA_VERSION}/{model.__name__}.json"
    return schema


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """(Re)write every payload's JSON Schema into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMA_MODELS.items():
        path = directory / f"{name}.json"
        path.write_text(schema_text(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR
    for written_path in write_schemas(target):
        print(written_path)
