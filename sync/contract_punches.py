"""Punch payloads: the record and the batch on `{base}/devices/{device}/punches`, and how they are built.

The forwarder's hot path does not build pydantic objects: a record's JSON is rendered once, when
the punch is stored (`record_json`), and batch envelopes are assembled around those strings
(`batch_json`). Tests assert that this fast path produces exactly what the models produce.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any, Literal

from pydantic import ConfigDict, Field

from punchgate.sync.contract_markers import SENT_WHEN_KEY, Payload, names_from
from punchgate.sync.contract_time import (
    LOCAL_TIME_PATTERN,
    OFFSET_PATTERN,
    UTC_TIME_PATTERN,
    UtcDateTime,
    utc_iso,
)
from punchgate.sync.records import ManualInfo, Punch, Source

SCHEMA_NAME = "punchgate.punches"
SCHEMA_VERSION = 1


class StateCode(Payload):
    """A terminal's raw punch-state code and, where known, what it means."""

    code: int = Field(description="the raw code as the terminal reported it")
    name: str | None = Field(
        description="its meaning (check_in, check_out, break_out, break_in, overtime_in, overtime_out); "
        "null when unknown",
        json_schema_extra=names_from("state_names"),
    )


class VerifyCode(Payload):
    """A terminal's raw verify-type code and, where known, what it means."""

    code: int = Field(description="the raw code as the terminal reported it")
    name: str | None = Field(
        description="its meaning (password, fingerprint, card, face, ...); null when unknown",
        json_schema_extra=names_from("verify_names"),
    )


class ManualDetails(Payload):
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


class PunchRecord(Payload):
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
        json_schema_extra=names_from("sources"),
    )
    historical: bool = Field(description="true for backlog and replay, false for a punch seen as it happened")
    flags: list[str] = Field(
        description="time flags: dst_fold, dst_gap, before_2000, in_future (the last two mean quarantined)",
        json_schema_extra=names_from("time_flags"),
    )
    manual: ManualDetails | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="make-up punch details: present exactly when source is manual (an addition to v1)",
        json_schema_extra={SENT_WHEN_KEY: {"source": "manual"}},
    )


class PunchBatch(Payload):
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


def record_json_dumps(punch: Punch) -> str:
    """The record's JSON text through `json.dumps` of `_record_dict`: the reference that
    `record_json` must match byte for byte (tests/sync/test_record_json.py)."""
    return json.dumps(_record_dict(punch), ensure_ascii=False, separators=(",", ":"))


# `record_json` writes the text `json.dumps(..., ensure_ascii=False, separators=(",", ":"))`
# writes, without building a dict per record (about 13 of a record's 30 µs of insert work went
# to the dict and the generic encoder): one %-template in the same key order, each string
# escaped by the encoder's own function (`encode_basestring`: quotes, backslash and control
# characters; non-ASCII kept), ints as `int.__repr__`, bools and None as JSON's words.
_RECORD_TEMPLATE = (
    '{"id":%s,"serial":%s,"user_id":%s,"local_time":%s,"utc_time":%s,"utc_offset":%s,'
    '"state":{"code":%s,"name":%s},"verify":{"code":%s,"name":%s},"work_code":%s,'
    '"source":%s,"historical":%s,"flags":[%s]}'
)
_str = encode_basestring
_int = int.__repr__
_OFFSETS: dict[int, str] = {}  # utc_offset_seconds -> its JSON string ("+01:00" quoted)


def _name(value: str | None) -> str:
    return "null" if value is None else _str(value)


def _utc_text(value: dt.datetime, isoformat: str | None) -> str:
    """`utc_iso(value)` for the usual aware UTC instant without converting it."""
    if value.tzinfo is dt.UTC:  # isoformat() ends in "+00:00"
        return (isoformat or value.isoformat())[:-6] + "Z"
    return utc_iso(value)


def record_json(punch: Punch, *, utc_isoformat: str | None = None) -> str:
    """The record's JSON text, rendered without pydantic (called once per punch at insert time).

    Exactly `record_json_dumps(punch)`; a make-up punch (its `manual` object) takes that path.
    `utc_isoformat`: `punch.utc_time.isoformat()` where the caller has it already (the insert
    stores it), so it is not formatted twice."""
    if punch.manual is not None:
        return record_json_dumps(punch)
    seconds = punch.utc_offset_seconds
    offset = _OFFSETS.get(seconds)
    if offset is None:
        offset = _OFFSETS.setdefault(seconds, _str(punch.utc_offset))
    local = punch.local_time
    if local.tzinfo is not None:
        local = local.replace(tzinfo=None)
    flags = punch.flags
    return _RECORD_TEMPLATE % (
        _str(punch.id),
        _str(punch.device_serial),
        _str(punch.user_id),
        _str(local.isoformat()),
        _str(_utc_text(punch.utc_time, utc_isoformat)),
        offset,
        _int(punch.state),
        _name(punch.state_name),
        _int(punch.verify),
        _name(punch.verify_name),
        _int(punch.work_code),
        _str(punch.source),
        "true" if punch.historical else "false",
        ",".join(map(_str, flags)) if flags else "",
    )


def batch_json(*, gateway: str, device: str, seq: int, records: Sequence[str]) -> bytes:
    """A batch envelope around already-rendered record JSON texts (the forwarder's hot path)."""
    head = json.dumps(
        {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "gateway": gateway, "device": device, "seq": seq},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return (head[:-1] + ',"records":[' + ",".join(records) + "]}").encode("utf-8")
