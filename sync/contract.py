"""The MQTT payload contract, v1 (docs/mqtt-contract.md): pydantic models and their JSON Schemas.

The models are the single definition of every payload. The JSON Schemas in `docs/schemas/`
(for consumers: unknown fields and later names allowed) and `docs/schemas/strict/` (exactly what
this release sends; the tests validate the gateway's output with them) are generated from these
models plus the name vocabularies, which live in drivers, sync and gateway. sync may not import
the other two, so the generator is `python -m punchgate.gateway.contract_schemas`, which collects
the vocabularies and calls `schema_files` here; a test keeps the checked-in files in step.

Every timestamp in every payload (and in the gateway's JSON API) is rendered by `utc_iso`:
ISO 8601 in UTC with a `Z`.

The forwarder's hot path does not build pydantic objects: a record's JSON is rendered once,
when the punch is stored (`record_json`), and batch envelopes are assembled around those
strings (`batch_json`). Tests assert that this fast path produces exactly what the models
produce and that every payload validates against the schemas.

Retained device states are published on change only (`publish_due`), and refreshed at least
every `STATE_REFRESH_SECONDS` so that their `as_of` tells a live state from a stale one.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from punchgate.sync.records import ManualInfo, Punch, Source

SCHEMA_NAME = "punchgate.punches"
SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
STRICT_SCHEMA_DIR = SCHEMA_DIR / "strict"

Severity = Literal["info", "warning", "error", "critical"]
LOCAL_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"
UTC_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
OFFSET_PATTERN = r"^[+-]\d{2}:\d{2}$"

# Retained device states (docs/mqtt-contract.md, "Device state"): what counts as a change.
STATE_REFRESH_SECONDS = 600.0  # republished at least this often while connected, so `as_of` stays fresh
DRIFT_BAND_SECONDS = 5.0  # clock drift moving less than this is not a change
COUNT_BAND_SHARE = 0.01  # a record/user count moving less than 1 % of its capacity is not a change
COUNT_BAND_UNKNOWN_CAPACITY = 100  # ... or less than this many when the capacity is unknown


def utc_iso(value: dt.datetime) -> str:
    """A timestamp as the contract writes it everywhere: ISO 8601, UTC, `Z` (naive means UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


UtcDateTime = Annotated[
    dt.datetime,
    PlainSerializer(utc_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": UTC_TIME_PATTERN}),
]

# Markers for the schema generator: which vocabulary a field's values come from (see `Vocabulary`).
_VOCABULARY_KEY = "x-vocabulary"
_COMPLETE_KEY = "x-complete"  # every field is always sent (the strict schemas require them all)
# ... except a field marked with this key: sent exactly when another field has a given value,
# e.g. {"source": "manual"} (the strict schemas say so with if/then/else).
_SENT_WHEN_KEY = "x-sent-when"


def _names(vocabulary: str) -> dict[str, Any]:
    return {_VOCABULARY_KEY: vocabulary}


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={_COMPLETE_KEY: True})


class StateCode(_Payload):
    """A terminal's raw punch-state code and, where known, what it means."""

    code: int = Field(description="the raw code as the terminal reported it")
    name: str | None = Field(
        description="its meaning (check_in, check_out, break_out, break_in, overtime_in, overtime_out); "
        "null when unknown",
        json_schema_extra=_names("state_names"),
    )


class VerifyCode(_Payload):
    """A terminal's raw verify-type code and, where known, what it means."""

    code: int = Field(description="the raw code as the terminal reported it")
    name: str | None = Field(
        description="its meaning (password, fingerprint, card, face, ...); null when unknown",
        json_schema_extra=_names("verify_names"),
    )


class ManualDetails(_Payload):
    """Who added a make-up punch, why, and who approved it (only on records with source manual)."""

    entry_id: str = Field(description="the make-up entry's own id (a UUID); part of the record id recipe")
    reason_code: str = Field(
        description="the reason category, from the site's list (defaults: forgot_to_punch, "
        "recognition_failed, terminal_fault, working_off_site, other)"
    )
    reason: str = Field(description="the free-text reason given when the punch was entered")
    entered_by: str = Field(description="the person who entered the make-up punch")
    entered_at: UtcDateTime = Field(description="when it was entered")
    approved_by: str | None = Field(
        description="the (different) person who approved it; null when the site requires no approval"
    )
    approved_at: UtcDateTime = Field(
        description="when it was approved (when it entered the stream, if no approval is required)"
    )


class PunchRecord(_Payload):
    """One punch. `id` is stable across re-reads, restarts and gateways: deduplicate on it."""

    id: str = Field(description="stable record id (hash of serial, user, local time, state, verify)")
    serial: str = Field(description="serial number of the terminal that recorded the punch")
    user_id: str = Field(description="the user's id on the terminal")
    local_time: str = Field(pattern=LOCAL_TIME_PATTERN, description="terminal-local time as read, no offset")
    utc_time: str = Field(pattern=UTC_TIME_PATTERN, description="the UTC instant, ISO 8601 with Z")
    utc_offset: str = Field(pattern=OFFSET_PATTERN, description="offset of local_time from UTC, +HH:MM")
    state: StateCode = Field(description="punch state: check_in, check_out, break_out, break_in, ...")
    verify: VerifyCode = Field(description="verification: fingerprint, face, card, password, ...")
    work_code: int = Field(description="work code entered at the terminal; 0 when none")
    source: Source = Field(
        description="poll (full read), live (real-time event), manual or push (uploaded by the terminal)",
        json_schema_extra=_names("sources"),
    )
    historical: bool = Field(description="true for backlog and replay, false for a punch seen as it happened")
    flags: list[str] = Field(
        description="time flags: dst_fold, dst_gap, before_2000, in_future (the last two mean quarantined)",
        json_schema_extra=_names("time_flags"),
    )
    manual: ManualDetails | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="make-up punch details: present exactly when source is manual (an addition to v1)",
        json_schema_extra={_SENT_WHEN_KEY: {"source": "manual"}},
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

    model_config = ConfigDict(json_schema_extra={_COMPLETE_KEY: False})  # offline omits the rest

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


class Fault(_Payload):
    code: str = Field(
        description="stable fault code from the catalogue (docs/health.md)",
        json_schema_extra=_names("device_faults"),
    )
    severity: Severity = Field(
        description="info, warning, error or critical", json_schema_extra=_names("severities")
    )
    detail: str = Field(description="human-readable detail")
    since: UtcDateTime = Field(description="when the fault was raised")


class DeviceState(_Payload):
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


class AuditHead(_Payload):
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


class DeviceEvent(_Payload):
    """On `{base}/devices/{device}/events`: a fault raised or cleared, or a clock correction."""

    device: str = Field(description="configured name of the terminal, or empty for the gateway itself")
    event: Literal["fault_raised", "fault_cleared", "clock_corrected"] = Field(description="what happened")
    code: str = Field(
        description="fault code (clock_drift for a correction)", json_schema_extra=_names("fault_codes")
    )
    severity: Severity = Field(description="severity of the fault", json_schema_extra=_names("severities"))
    detail: str = Field(description="human-readable detail")
    time: UtcDateTime = Field(description="when it happened")


RECORD_ID_PATTERN = r"^[0-9a-f]{32}$"
CONFIRM_SCHEMA_NAME = "punchgate.confirm"
DIGESTS_SCHEMA_NAME = "punchgate.digests"
DIGEST_SCHEME = 1  # the digest recipe's version (docs/mqtt-contract.md, "Reconciliation digests")


class ConfirmedBatch(_Payload):
    """One batch confirmed whole, named as the gateway numbered it."""

    device: str = Field(description="the batch's `device`")
    seq: int = Field(ge=1, description="the batch's `seq`")
    count: int = Field(
        ge=1, description="how many records the batch carried (a check: a mismatch is ignored)"
    )


class Confirmation(_Payload):
    """Published by a central consumer on `{base}/confirm` (QoS 1, not retained): these punches
    are durably stored at central. Ids are the truth; batches are a shorthand that only works
    while the gateway remembers the batch (it forgets them when it restarts)."""

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, json_schema_extra={_COMPLETE_KEY: False}
    )

    schema_name: Literal["punchgate.confirm"] = Field(alias="schema", description="payload schema name")
    version: Literal[1] = Field(description="payload schema version")
    consumer: str = Field(default="", description="who confirms (e.g. the consumer's client id), for logs")
    ids: list[Annotated[str, Field(pattern=RECORD_ID_PATTERN)]] = Field(
        default_factory=list, description="record ids stored durably, in any order, repeats allowed"
    )
    batches: list[ConfirmedBatch] = Field(
        default_factory=list, description="batches whose every record was stored durably"
    )


class DigestDay(_Payload):
    """The punches a gateway holds for one terminal-local day."""

    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="terminal-local day, YYYY-MM-DD")
    count: int = Field(ge=1, description="punches held for that day")
    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (hex) of the day's record ids, sorted, joined by newlines (scheme 1)",
    )


class DeviceDigests(_Payload):
    """Retained on `{base}/devices/{device}/digests`: what the gateway holds per local day of one
    terminal, for reconciliation (docs/mqtt-contract.md, "Reconciliation digests")."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    schema_name: Literal["punchgate.digests"] = Field(alias="schema", description="payload schema name")
    version: Literal[1] = Field(description="payload schema version")
    scheme: Literal[1] = Field(description="digest recipe version")
    gateway: str = Field(description="id of the gateway that holds the punches")
    device: str = Field(description="configured name of the terminal")
    as_of: UtcDateTime = Field(description="when the gateway computed these digests")
    first_day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="first local day covered")
    last_day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="last local day covered")
    days: list[DigestDay] = Field(
        description="every covered day with at least one punch, oldest first; a covered day not "
        "listed has none"
    )


def day_digest(ids: Sequence[str]) -> str:
    """The digest of one day's record ids (scheme 1): SHA-256, hex, of the ids sorted and joined
    by "\\n" (no trailing newline), as UTF-8. Repeats count once."""
    return hashlib.sha256("\n".join(sorted(set(ids))).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Building payloads


def _manual_dict(manual: ManualInfo) -> dict[str, Any]:
    return {
        "entry_id": manual.entry_id,
        "reason_code": manual.reason_code,
        "reason": manual.reason,
        "entered_by": manual.entered_by,
        "entered_at": utc_iso(manual.entered_at),
        "approved_by": manual.approved_by,
        "approved_at": utc_iso(manual.approved_at),
    }


def _record_dict(punch: Punch) -> dict[str, Any]:
    record = {
        "id": punch.id,
        "serial": punch.device_serial,
        "user_id": punch.user_id,
        "local_time": punch.local_time.replace(tzinfo=None).isoformat(),
        "utc_time": utc_iso(punch.utc_time),
        "utc_offset": punch.utc_offset,
        "state": {"code": punch.state, "name": punch.state_name},
        "verify": {"code": punch.verify, "name": punch.verify_name},
        "work_code": punch.work_code,
        "source": punch.source,
        "historical": punch.historical,
        "flags": list(punch.flags),
    }
    if punch.manual is not None:
        record["manual"] = _manual_dict(punch.manual)
    return record


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


def gateway_online(*, version: str, started_at: dt.datetime, **figures: Any) -> bytes:
    """The retained online state; `figures` adds the delivery figures (as_of, delivery, pending,
    unconfirmed, oldest_unconfirmed_age_seconds), and a field left None is not sent."""
    state = GatewayState(state="online", version=version, started_at=started_at, **figures)
    return state.model_dump_json(exclude_none=not figures).encode()


def gateway_offline() -> bytes:
    return GatewayState(state="offline").model_dump_json(exclude_none=True).encode()


# ---------------------------------------------------------------------------------------------
# Retained device state: what counts as a change


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


def _count_moved(old: int | None, new: int | None, capacity: int | None) -> bool:
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
        or _count_moved(published.record_count, current.record_count, current.record_capacity)
        or _count_moved(published.user_count, current.user_count, current.user_capacity)
    )


def publish_due(
    published: DeviceState | None, current: DeviceState, *, refresh_seconds: float = STATE_REFRESH_SECONDS
) -> bool:
    """Should `current` be published? On the first state, on a change (`state_changed`), and once
    the last publish is `refresh_seconds` old (measured on `as_of`), so `as_of` stays meaningful."""
    if published is None or state_changed(published, current):
        return True
    return (current.as_of - published.as_of).total_seconds() >= refresh_seconds


# ---------------------------------------------------------------------------------------------
# JSON Schemas

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "punch-batch": PunchBatch,
    "punch-record": PunchRecord,
    "gateway-state": GatewayState,
    "device-state": DeviceState,
    "device-event": DeviceEvent,
    "confirmation": Confirmation,
    "device-digests": DeviceDigests,
    "audit-head": AuditHead,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Vocabulary:
    """The names and codes payloads carry, as the code that produces them defines them.

    They live in drivers (state and verify names, device faults), sync (time flags, gateway
    faults) and gateway (severities), and sync may import neither of the others, so
    `punchgate.gateway.contract_schemas` collects them and passes them in.
    """

    state_names: Sequence[str]
    verify_names: Sequence[str]
    time_flags: Sequence[str]
    device_faults: Sequence[str]
    gateway_faults: Sequence[str]
    severities: Sequence[str]

    def values(self, name: str) -> list[str]:
        """A vocabulary's values without repeats, in the order given (fault_codes: both kinds)."""
        if name == "fault_codes":
            return list(dict.fromkeys([*self.device_faults, *self.gateway_faults]))
        if name == "sources":  # defined here in sync, by the record type
            return list(get_args(Source))
        return list(dict.fromkeys(getattr(self, name)))


# Vocabularies a later release may extend (a new terminal family, fault or flag) without a new
# schema version: the consumer schemas list them but accept other strings too.
# `source` is open too: the design announced `manual` and `push` as part of v1, and a new way
# of getting punches (a new terminal family) must not break consumers.
OPEN_VOCABULARIES = frozenset(
    {"state_names", "verify_names", "time_flags", "device_faults", "fault_codes", "sources"}
)


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nodes(item)


def _string_options(node: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Where a field's `{"type": "string"}` schema sits: (the schema whose `anyOf` holds it, its
    index). A bare string schema is wrapped into a one-option `anyOf` so all cases look alike."""
    if node.get("type") == "array":
        return _string_options(node["items"])
    if "anyOf" not in node:
        if node.get("type") != "string":
            raise ValueError(f"no string schema to put a vocabulary into: {node}")
        option = {key: node.pop(key) for key in ("type", "enum") if key in node}
        node["anyOf"] = [option]
    for index, option in enumerate(node["anyOf"]):
        if option.get("type") == "string":
            return node, index
    raise ValueError(f"no string schema to put a vocabulary into: {node}")


def _apply_vocabulary(node: dict[str, Any], values: list[str], *, open_: bool) -> None:
    holder, index = _string_options(node)
    options: list[dict[str, Any]] = holder["anyOf"]
    declared = options[index].get("enum")  # a Literal in the model: it must agree with the code
    if declared is not None and sorted(declared) != sorted(values):
        raise ValueError(f"the model allows {sorted(declared)} but the code defines {sorted(values)}")
    known = {"type": "string", "enum": values}
    if open_:
        known["description"] = "known in this release"
        later = {"type": "string", "description": "added by a later release: accept it, treat it as unknown"}
        options[index : index + 1] = [known, later]
    else:
        options[index] = known
    if len(options) == 1:  # a plain closed string field: no anyOf needed
        holder.update(holder.pop("anyOf")[0])


def _require_every_field(node: dict[str, Any]) -> None:
    """Strict: every field is required, but one sent only with a value of another field is
    required with it and absent without it (if/then/else)."""
    properties: dict[str, Any] = node["properties"]
    conditional = {name: p[_SENT_WHEN_KEY] for name, p in properties.items() if _SENT_WHEN_KEY in p}
    node["required"] = [name for name in properties if name not in conditional]
    for name in conditional:  # never sent as null: absent instead
        field = properties[name]
        field.pop("default", None)
        field["anyOf"] = [option for option in field.get("anyOf", []) if option.get("type") != "null"]
    rules = [
        {
            "if": {
                "properties": {key: {"const": value} for key, value in when.items()},
                "required": list(when),
            },
            "then": {"required": [name]},
            "else": {"not": {"required": [name]}},
        }
        for name, when in conditional.items()
    ]
    if rules:
        node["allOf"] = rules


def json_schema(model: type[BaseModel], vocabulary: Vocabulary, *, strict: bool) -> dict[str, Any]:
    """The JSON Schema of one payload: strict (exactly what this release sends) or for consumers
    (unknown fields allowed, fields added since 1.0 optional, open vocabularies extensible)."""
    schema = copy.deepcopy(model.model_json_schema(by_alias=True, mode="serialization"))
    for node in _nodes(schema):
        complete = node.pop(_COMPLETE_KEY, False)
        if strict and complete:
            _require_every_field(node)
        node.pop(_SENT_WHEN_KEY, None)
        if not strict and node.get("additionalProperties") is False:
            del node["additionalProperties"]
        names = node.pop(_VOCABULARY_KEY, None)
        if names is not None:
            open_ = not strict and (names in OPEN_VOCABULARIES)
            _apply_vocabulary(node, vocabulary.values(names), open_=open_)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    variant = "strict/" if strict else ""
    schema["$id"] = f"https://punchgate.invalid/schemas/v{SCHEMA_VERSION}/{variant}{model.__name__}.json"
    return schema


def schema_files(vocabulary: Vocabulary) -> dict[str, str]:
    """Every schema file's text by its path relative to `SCHEMA_DIR` (`x.json`, `strict/x.json`)."""
    # The remote commands' payloads live in their own module, which builds on this one.
    from punchgate.sync.command_contract import COMMAND_SCHEMA_MODELS

    files = {}
    for strict in (False, True):
        for name, model in {**SCHEMA_MODELS, **COMMAND_SCHEMA_MODELS}.items():
            path = f"strict/{name}.json" if strict else f"{name}.json"
            files[path] = (
                json.dumps(json_schema(model, vocabulary, strict=strict), indent=2, sort_keys=True) + "\n"
            )
    return files


def write_schemas(vocabulary: Vocabulary, directory: Path = SCHEMA_DIR) -> list[Path]:
    """(Re)write every schema into `directory` (and its `strict/`); returns the files written."""
    written = []
    for relative, text in schema_files(vocabulary).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
