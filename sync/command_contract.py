"""Remote commands in the MQTT contract (docs/mqtt-contract.md, "Remote commands"): the request a
central system publishes on `{base}/commands/request` and the responses the gateway publishes.

The models are the single definition of both payloads; the JSON Schemas
(`docs/schemas/command-request.json`, `command-response.json` and their strict twins) are
generated from them with the rest of the contract (`python -m punchgate.gateway.contract_schemas`).
The gateway validates every request with `parse_request`, so what the schema says and what the
gateway accepts cannot drift apart.

A request is an envelope (`schema`, `version`, a client-chosen `id`, `requester`, `terminals`,
an optional `expires_at`) plus `command` and its `args`. The envelope ignores fields it does not
know (a newer requester may add some); `args` refuses them, because a mistyped argument of a
command that deletes users must never be dropped silently. Types are strict: `"5"` is not a number.

Additions to v1 of the contract: new topics and payloads, so `version` stays 1.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic.config import JsonDict

from punchgate.sync.contract import UtcDateTime, utc_iso

REQUEST_SCHEMA_NAME = "punchgate.command"
RESPONSE_SCHEMA_NAME = "punchgate.command_response"
# A request id: the requester's own, unique per gateway; echoed in every answer.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$"
TERMINAL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # as the config allows them
MAX_USERS_PER_REQUEST = 1000

# Every command, in the order the docs list them.
COMMANDS = (
    "device.info",
    "device.read_now",
    "device.set_time",
    "device.restart",
    "device.enable",
    "device.disable",
    "punches.resend",
    "users.list",
    "users.upsert",
    "users.delete",
    "log.clear",
    "gateway.status",
)
CommandName = Literal[
    "device.info",
    "device.read_now",
    "device.set_time",
    "device.restart",
    "device.enable",
    "device.disable",
    "punches.resend",
    "users.list",
    "users.upsert",
    "users.delete",
    "log.clear",
    "gateway.status",
]
Status = Literal["accepted", "running", "ok", "error", "expired"]
FINAL_STATUSES = frozenset({"ok", "error", "expired"})

# The error codes a response may carry (`error.code`), stable; a later release may add some.
ERROR_CODES = {
    "bad_json": "the payload is not a JSON object",
    "too_large": "the payload is bigger than [commands] max_request_bytes",
    "bad_request": "a field of the envelope is missing, of the wrong type or malformed",
    "unknown_command": "the command is not one this gateway knows",
    "not_allowed": "the command is not in this gateway's [commands] allow list",
    "unknown_terminal": "a named terminal is not one this gateway reads",
    "bad_argument": "an argument is missing, unknown, of the wrong type or out of range",
    "unsupported": "the terminal's protocol (or this gateway's driver for it) cannot do this",
    "terminal_error": "the terminal failed while the command ran (unreachable, timeout, protocol error)",
    "refused": "the terminal answered, and refused",
    "user_does_not_fit": "a user's id, name, card or password does not fit the terminal's fields",
    "serial_mismatch": "log.clear: the serial number given is not the terminal's",
    "clear_not_allowed": "log.clear: the terminal's config does not allow clearing it",
    "clock_unsynchronised": "device.set_time: the gateway's own clock is not known to be synchronised",
    "time_out_of_bounds": "device.set_time: the time is too far from the gateway's clock",
    "interrupted": "the gateway stopped while the command ran; it may or may not have taken effect",
    "internal": "a bug in the gateway; the log has the details",
}

# Input times: ISO 8601 with an offset (Z or +01:00); rendered back in UTC with Z.
AwareTime = Annotated[
    AwareDatetime,
    PlainSerializer(utc_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
TerminalName = Annotated[str, Field(pattern=TERMINAL_NAME_PATTERN)]
_NOT_COMPLETE: JsonDict = {"x-complete": False}
_COMPLETE: JsonDict = {"x-complete": True}  # the generator's marker: optional fields stay optional


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, json_schema_extra=_NOT_COMPLETE)


class NoArgs(_Args):
    """The command takes no arguments: `args` is `{}` or absent."""


class SetTimeArgs(_Args):
    time: str | None = Field(
        None,
        max_length=40,
        description="the time to set: ISO 8601 with an offset (an instant, shown in the terminal's "
        "zone) or without (the terminal's local time); absent: the gateway's clock",
    )


class ResendArgs(_Args):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    from_: AwareTime | None = Field(
        None, alias="from", description="resend punches whose time is at or after this instant"
    )
    to: AwareTime | None = Field(None, description="... and before this instant (default: now)")
    day: dt.date | None = Field(
        None,
        description="instead of from/to: one terminal-local day (YYYY-MM-DD), as the digests count them",
    )


class UserSpec(_Args):
    """One user to create or change. Omitted fields keep their value (or the terminal's default)."""

    user_id: str = Field(min_length=1, max_length=64, description="the user id punches carry")
    name: str | None = Field(None, max_length=64, description="the name the terminal shows")
    privilege: Literal["user", "admin"] | None = Field(None, description="user (default) or admin")
    card: int | None = Field(None, ge=0, le=0xFFFFFFFF, description="card number; 0: no card")
    password: str | None = Field(
        None, pattern=r"^[0-9]{0,8}$", description="keypad password, digits; empty: none"
    )


class UsersUpsertArgs(_Args):
    users: list[UserSpec] = Field(min_length=1, max_length=MAX_USERS_PER_REQUEST)


class UsersDeleteArgs(_Args):
    user_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_USERS_PER_REQUEST
    )


class LogClearArgs(_Args):
    serial: str = Field(
        min_length=1, max_length=64, description="the terminal's serial number, repeated as a guard"
    )


class _Request(BaseModel):
    """The envelope every request shares."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        strict=True,
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra=_NOT_COMPLETE,
    )

    schema_name: Literal["punchgate.command"] = Field(alias="schema", description="payload schema name")
    version: Literal[1] = Field(description="payload schema version")
    id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="the requester's id for this request (1-128 characters); answers echo it, and a "
        "repeated id is answered from what the gateway stored, never run again",
    )
    requester: str = Field(
        min_length=1, max_length=128, description="who asks (a system or person), for the audit trail"
    )
    terminals: list[TerminalName] | Literal["*"] | None = Field(
        None,
        description='terminal names, or "*" for every terminal; absent for gateway.status (and for '
        "punches.resend: every terminal)",
    )
    expires_at: AwareTime | None = Field(
        None,
        description="give up on terminals not reached by then (default: [commands] default_ttl_seconds)",
    )


class DeviceInfoRequest(_Request):
    command: Literal["device.info"]
    args: NoArgs = Field(default_factory=NoArgs)


class ReadNowRequest(_Request):
    command: Literal["device.read_now"]
    args: NoArgs = Field(default_factory=NoArgs)


class SetTimeRequest(_Request):
    command: Literal["device.set_time"]
    args: SetTimeArgs = SetTimeArgs(time=None)


class RestartRequest(_Request):
    command: Literal["device.restart"]
    args: NoArgs = Field(default_factory=NoArgs)


class EnableRequest(_Request):
    command: Literal["device.enable"]
    args: NoArgs = Field(default_factory=NoArgs)


class DisableRequest(_Request):
    command: Literal["device.disable"]
    args: NoArgs = Field(default_factory=NoArgs)


class ResendRequest(_Request):
    command: Literal["punches.resend"]
    args: ResendArgs


class UsersListRequest(_Request):
    command: Literal["users.list"]
    args: NoArgs = Field(default_factory=NoArgs)


class UsersUpsertRequest(_Request):
    command: Literal["users.upsert"]
    args: UsersUpsertArgs


class UsersDeleteRequest(_Request):
    command: Literal["users.delete"]
    args: UsersDeleteArgs


class LogClearRequest(_Request):
    command: Literal["log.clear"]
    args: LogClearArgs


class GatewayStatusRequest(_Request):
    command: Literal["gateway.status"]
    args: NoArgs = Field(default_factory=NoArgs)


AnyRequest = Annotated[
    DeviceInfoRequest
    | ReadNowRequest
    | SetTimeRequest
    | RestartRequest
    | EnableRequest
    | DisableRequest
    | ResendRequest
    | UsersListRequest
    | UsersUpsertRequest
    | UsersDeleteRequest
    | LogClearRequest
    | GatewayStatusRequest,
    Field(discriminator="command"),
]


class CommandRequest(RootModel[AnyRequest]):
    """Published by central on `{base}/commands/request` (QoS 1, not retained): run `command` on
    `terminals` with `args`. The gateway answers on `{base}/commands/response`, or on the MQTT 5
    response topic the request carries (with its correlation data)."""


_REQUEST = TypeAdapter(AnyRequest)


def parse_request(payload: bytes | str) -> AnyRequest:
    """The request in `payload` (JSON); pydantic's ValidationError when it is not a valid one."""
    return _REQUEST.validate_json(payload, strict=True)


class CommandError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_COMPLETE)

    code: str = Field(
        description="stable error code: " + ", ".join(ERROR_CODES) + " (a later release may add codes)"
    )
    message: str = Field(description="a sentence saying what is wrong, naming the field or user")


class CommandResponse(BaseModel):
    """Published by the gateway (QoS 1, not retained) on `{base}/commands/response` or the
    request's MQTT 5 response topic. One `accepted` per request (terminal null), then per
    terminal `running` and one final answer: `ok`, `error` or `expired`. A request refused as a
    whole (bad JSON, unknown command, not allowed, ...) gets one `error` with terminal null."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra=_COMPLETE,
    )

    schema_name: Literal["punchgate.command_response"] = Field(
        alias="schema", description="payload schema name"
    )
    version: Literal[1] = Field(description="payload schema version")
    gateway: str = Field(description="id of the answering gateway")
    id: str | None = Field(description="the request's id; null when it could not be read")
    command: str | None = Field(description="the request's command; null when it could not be read")
    terminal: str | None = Field(
        description="the terminal this answer is about; null for the request as a whole and for "
        "gateway-wide commands"
    )
    status: Status = Field(
        description="accepted (stored, will run), running, ok, error or expired (not run in time); "
        "ok, error and expired are final"
    )
    result: dict[str, Any] | None = Field(
        description="what the command returned (ok), or the accepted request's summary; else null"
    )
    error: CommandError | None = Field(description="why (status error); else null")
    repeat: bool = Field(
        description="true when this answers a request id the gateway had seen: the stored outcome, "
        "or how far it got; the command was not run again"
    )
    at: UtcDateTime = Field(description="when the gateway built this answer")


def response_json(
    *,
    gateway: str,
    request_id: str | None,
    command: str | None,
    terminal: str | None,
    status: Status,
    result: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
    repeat: bool = False,
    at: dt.datetime | None = None,
) -> bytes:
    """One response, rendered (validated by the model on the way)."""
    response = CommandResponse.model_validate(
        {
            "schema": RESPONSE_SCHEMA_NAME,
            "version": 1,
            "gateway": gateway,
            "id": request_id,
            "command": command,
            "terminal": terminal,
            "status": status,
            "result": result,
            "error": None if error is None else {"code": error[0], "message": error[1]},
            "repeat": repeat,
            "at": at or dt.datetime.now(dt.UTC),
        }
    )
    return response.model_dump_json().encode()


COMMAND_SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "command-request": CommandRequest,
    "command-response": CommandResponse,
}
