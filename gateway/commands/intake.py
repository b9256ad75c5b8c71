"""From an MQTT message to an accepted request, or to the error that refuses it (nothing runs).

`read_request` checks, in this order, and stops at the first problem: the size, that the payload
is a JSON object, the command's name (unknown / not allowed), the envelope and the arguments
against the contract's models (`punchgate.sync.command_contract`), the response topic, the
terminals named, the expiry, and what the models cannot say (a time that is no time, from after
to). Each refusal has a stable code and a sentence naming the field; none raises.

`masked` is the request as logs, the audit trail and the buffer (once done) keep it: passwords
replaced by a mask.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from punchgate.gateway.commands.catalogue import CATALOGUE, CommandSpec
from punchgate.gateway.commands.settings import CommandsSettings
from punchgate.sync.command_contract import (
    COMMANDS,
    REQUEST_ID_PATTERN,
    AnyRequest,
    LogClearRequest,
    ResendRequest,
    SetTimeRequest,
    parse_request,
)

MASK = "***"
MAX_TOPIC_LENGTH = 512
TerminalKind = Literal["pull", "push", "disabled"]


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    message: str
    request_id: str | None = None
    command: str | None = None
    requester: str | None = None
    reply_topic: str | None = None  # None: the gateway's default response topic


@dataclass(frozen=True, slots=True)
class Accepted:
    request: AnyRequest
    spec: CommandSpec
    targets: tuple[str, ...]  # terminal names; ("",) for a gateway-wide command
    expires_at: float  # unix time
    reply_topic: str
    correlation: bytes | None
    document: dict[str, Any]  # the request as stored (JSON-ready, secrets included)

    @property
    def id(self) -> str:
        return self.request.id


def masked(document: Mapping[str, Any]) -> dict[str, Any]:
    """`document` (a request as stored) with every password replaced by a mask."""
    copy = json.loads(json.dumps(document))
    args = copy.get("args")
    if isinstance(args, dict):
        for user in args.get("users") or []:
            if isinstance(user, dict) and user.get("password") is not None:
                user["password"] = MASK
    return dict(copy)


def _raw_id(raw: Any) -> str | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and re.fullmatch(REQUEST_ID_PATTERN, value) else None


def _raw_str(raw: Any, key: str) -> str | None:
    value = raw.get(key) if isinstance(raw, dict) else None
    return value[:128] if isinstance(value, str) else None


def _where(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_FIELD_HINTS = {
    "id": "id must be 1-128 characters (letters, digits and ._:@/+=-), starting with a letter or digit",
    "schema": 'schema must be "punchgate.command"',
    "version": "version must be 1",
    "requester": "requester must be a text of 1-128 characters naming who asks",
    "terminals": 'terminals must be a list of terminal names, or "*" for every terminal',
    "expires_at": "expires_at must be an ISO 8601 time with an offset, e.g. 2026-11-20T06:00:00Z",
}


def _from_validation(exc: ValidationError, command: str) -> tuple[str, str]:
    """(code, sentence) for the first problem pydantic found."""
    error = exc.errors()[0]
    kind = str(error["type"])
    if kind == "union_tag_not_found":
        return "bad_request", "command is required: one of " + ", ".join(COMMANDS)
    loc = list(error["loc"])[1:]  # the first element is the command (the union's tag)
    where = _where(loc)
    if loc and loc[0] == "args":
        if kind == "missing":
            return "bad_argument", f"{where} is required for {command}"
        if kind == "extra_forbidden":
            return "bad_argument", f"{where} is not an argument of {command}"
        if kind == "model_type" and len(loc) == 1:
            return "bad_argument", f"args must be a JSON object of {command}'s arguments"
        return "bad_argument", f"{where}: {error['msg']} (got {json.dumps(error.get('input'))[:80]})"
    field = str(loc[0]) if loc else ""
    if kind == "missing":
        return "bad_request", f"{where} is required"
    hint = _FIELD_HINTS.get(field)
    return "bad_request", hint or f"{where}: {error['msg']}"


def _terminals(
    request: AnyRequest, spec: CommandSpec, kinds: Mapping[str, TerminalKind]
) -> tuple[str, ...] | Rejection:
    wanted = request.terminals

    def reject(code: str, message: str) -> Rejection:
        return Rejection(code, message)

    if spec.scope == "gateway":
        if wanted is not None:
            return reject("bad_request", f"{request.command} is about the gateway: leave terminals out")
        return ("",)
    served = [name for name, kind in kinds.items() if kind != "disabled"]
    if wanted is None and spec.scope == "terminal":
        return reject(
            "bad_request",
            f'terminals is required for {request.command}: a list of names, or "*" for every terminal',
        )
    if wanted is None or wanted == "*":
        names = list(served)
    else:
        names = list(dict.fromkeys(wanted))
        if not names:
            return reject("bad_request", 'terminals is empty: name at least one terminal, or write "*"')
        for name in names:
            kind = kinds.get(name)
            if kind is None:
                shown = ", ".join(served[:10]) + (", ..." if len(served) > 10 else "")
                return reject("unknown_terminal", f"no terminal named {name!r} (this gateway reads: {shown})")
            if kind == "disabled":
                return reject(
                    "unknown_terminal", f"terminal {name!r} has enabled = false in the config: it is not read"
                )
    if not names:
        return reject("unknown_terminal", "this gateway reads no terminal")
    if spec.single_terminal and len(names) != 1:
        return reject(
            "bad_argument",
            f"{request.command} takes exactly one terminal (it repeats that terminal's serial)",
        )
    return tuple(names)


def parse_set_time(text: str) -> dt.datetime:
    """The `time` of device.set_time: aware (an instant) or naive (the terminal's local time)."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value.replace(microsecond=0)


def _argument_problem(request: AnyRequest, now: float) -> str | None:
    """What the models cannot say about the arguments; None when they make sense."""
    if isinstance(request, SetTimeRequest) and request.args.time is not None:
        try:
            parse_set_time(request.args.time)
        except ValueError:
            return (
                f"args.time {request.args.time!r} is not an ISO 8601 time such as 2026-11-20T06:00:00+01:00"
            )
    if isinstance(request, ResendRequest):
        args = request.args
        if args.day is not None and (args.from_ is not None or args.to is not None):
            return "args: give either day, or from (and to), not both"
        if args.day is None and args.from_ is None:
            return "args.from (an ISO 8601 time) or args.day (YYYY-MM-DD) is required for punches.resend"
        if args.from_ is not None:
            until = args.to.timestamp() if args.to is not None else now
            if args.from_.timestamp() >= until:
                return "args.from must be before args.to (or before now)"
    if isinstance(request, LogClearRequest) and not request.args.serial.strip():
        return "args.serial must be the terminal's serial number"
    return None


def _reply_topic(response_topic: str | None, default: str) -> str | None:
    """The topic to answer on; None when the MQTT 5 response topic given is not one the gateway
    answers on: it must be the gateway's response topic or lie below it, so a request can
    never make the gateway publish on its other topics (punches, states)."""
    if response_topic is None:
        return default
    if len(response_topic) > MAX_TOPIC_LENGTH or any(c in response_topic for c in "+#\0"):
        return None
    if response_topic != default and not response_topic.startswith(default + "/"):
        return None
    return response_topic


def read_request(
    payload: bytes,
    *,
    settings: CommandsSettings,
    kinds: Mapping[str, TerminalKind],
    default_topic: str,
    response_topic: str | None = None,
    correlation: bytes | None = None,
    now: float,
) -> Accepted | Rejection:
    """The request in one message, accepted (to be stored and run) or refused (see the module)."""
    topic = _reply_topic(response_topic, default_topic)
    reply = topic or default_topic  # a refusal goes where the requester listens, if it can
    ident: str | None = None
    command: str | None = None
    requester: str | None = None

    def refuse(code: str, message: str) -> Rejection:
        return Rejection(code, message, ident, command, requester, reply)

    if len(payload) > settings.max_request_bytes:
        return refuse(
            "too_large",
            f"the request has {len(payload)} bytes; this gateway takes at most {settings.max_request_bytes}",
        )
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return refuse("bad_json", "the payload is not JSON")
    if not isinstance(raw, dict):
        return refuse("bad_json", "the payload must be a JSON object")
    ident, requester = _raw_id(raw), _raw_str(raw, "requester")
    named = raw.get("command")
    command = named[:60] if isinstance(named, str) else None
    if command is not None and command not in CATALOGUE:
        return refuse("unknown_command", f"unknown command {command!r}; known: " + ", ".join(COMMANDS))
    if command is not None and command not in settings.allow:
        return refuse(
            "not_allowed", f"{command} is not allowed on this gateway ([commands] allow in its config)"
        )
    if topic is None:
        return refuse("bad_request", f"the MQTT 5 response topic must be {default_topic} or a topic below it")
    try:
        request = parse_request(payload)
    except ValidationError as exc:
        return refuse(*_from_validation(exc, command or ""))
    spec = CATALOGUE[request.command]
    targets = _terminals(request, spec, kinds)
    if isinstance(targets, Rejection):
        return refuse(targets.code, targets.message)
    problem = _argument_problem(request, now)
    if problem is not None:
        return refuse("bad_argument", problem)
    if request.expires_at is None:
        expires = now + settings.default_ttl_seconds
    else:
        expires = request.expires_at.timestamp()
        if expires > now + settings.max_ttl_seconds:
            return refuse(
                "bad_request",
                f"expires_at is {expires - now:.0f} s ahead; this gateway waits at most "
                f"{settings.max_ttl_seconds:g} s ([commands] max_ttl_seconds)",
            )
    return Accepted(
        request=request,
        spec=spec,
        targets=targets,
        expires_at=expires,
        reply_topic=topic,
        correlation=correlation,
        document=request.model_dump(mode="json", by_alias=True),
    )
