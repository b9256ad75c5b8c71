"""The loopback API for push-terminal commands (docs/zk-push.md, "Commands"), behind the same
guards as replay and the make-up punches.

    POST /api/push-commands/{device}            {"command": TEXT, "expires_in": SECONDS}
                                                or {"command": TEXT, "expires_at": TIME}  -> 201 command
    GET  /api/push-commands/{device}[?open=1]                                    -> {"commands": [...]}
    GET  /api/push-commands/{device}/{n}                                         -> command

`punchgate.gateway.http` applies its middlewares: Host and Origin must be this gateway's (403),
the POST needs the API token (401) and a JSON body (415), bodies and requests in progress are
bounded. The GETs need the token too, checked here: a command may name people. TEXT is one
command of `punchgate.drivers.zk_push.commands` (INFO, CHECK, REBOOT, `SET OPTIONS
DateTime=…`, `DATA UPDATE USERINFO PIN=…`, `DATA DELETE USERINFO PIN=…`); `expires_in`
defaults to `DEFAULT_EXPIRES_IN`. A command the queue does not take is answered 400 (the text
or the expiry), 404 (no such zk-push terminal, no such command), 409 (the queue is full) or
503 (the listener is starting or the buffer refused), with the sentence saying which.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from aiohttp import web

from punchgate.gateway.http_common import STATE, Refusal, json_answer, json_object, token_for_reads
from punchgate.gateway.push_commands import PushCommandError, PushCommandQueue, push_command_queue

DEFAULT_EXPIRES_IN = 3600.0  # seconds a command waits for its terminal unless told otherwise
STATUS_OF_CODE = {
    "unknown_terminal": 404,
    "unknown_command": 404,
    "bad_command": 400,
    "expired": 400,
    "queue_full": 409,
    "unavailable": 503,
}


def _queue(request: web.Request) -> tuple[PushCommandQueue, str]:
    app = request.app[STATE].gateway
    device = request.match_info["device"]
    queue = push_command_queue(app)
    if queue is None or device not in queue.devices:
        known = device in {t.name for t in app.settings.terminals}
        why = "is not a zk-push terminal" if known else "is no terminal of this gateway"
        if known and queue is None:
            why = "cannot take commands: the [push] listener does not run"
        raise Refusal(404, f"{device!r} {why}")
    return queue, device


def _refusal(error: PushCommandError) -> Refusal:
    return Refusal(STATUS_OF_CODE.get(error.code, 400), str(error))


def _expires_at(body: dict[str, Any], now: float) -> float:
    if "expires_at" in body and "expires_in" in body:
        raise Refusal(400, "give expires_in or expires_at, not both")
    if "expires_at" in body:
        value = body["expires_at"]
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if isinstance(value, str):
            try:
                when = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                pass
            else:
                return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
        raise Refusal(400, "expires_at must be an ISO 8601 time such as 2026-11-20T06:00:00Z or a unix time")
    value = body.get("expires_in", DEFAULT_EXPIRES_IN)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise Refusal(400, "expires_in must be a number of seconds greater than 0")
    return now + float(value)


async def _send(request: web.Request) -> web.Response:
    queue, device = _queue(request)
    body = await json_object(request)
    unknown = sorted(set(body) - {"command", "expires_in", "expires_at"})
    if unknown:
        raise Refusal(400, f"unknown key {unknown[0]!r} (expected command and expires_in or expires_at)")
    text = body.get("command")
    if not isinstance(text, str):
        raise Refusal(400, 'command is required: one command as text, e.g. {"command": "INFO"}')
    try:
        command_id = await queue.enqueue(device, text, expires_at=_expires_at(body, time.time()))
    except PushCommandError as exc:
        raise _refusal(exc) from None
    status = queue.status(command_id)
    assert status is not None
    return json_answer(201, status.as_dict())


async def _list(request: web.Request) -> web.Response:
    token_for_reads(request)
    queue, device = _queue(request)
    only_open = request.query.get("open", "") in ("1", "true", "yes")
    entries = queue.list_commands(device, finished=not only_open)
    return json_answer(200, {"device": device, "commands": [e.as_dict() for e in entries]})


async def _one(request: web.Request) -> web.Response:
    token_for_reads(request)
    queue, device = _queue(request)
    number = request.match_info["number"]
    status = queue.status(f"{device}/{number}") if number.isdigit() else None
    if status is None:
        raise Refusal(404, f"no command {number!r} for {device} (finished ones are kept for a while only)")
    return json_answer(200, status.as_dict())


ROUTES = [
    web.post("/api/push-commands/{device}", _send),
    web.get("/api/push-commands/{device}", _list),
    web.get("/api/push-commands/{device}/{number}", _one),
]
