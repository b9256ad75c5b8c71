"""Remote commands for zk-push terminals, through the push command queue (gateway/push_commands.py).

A push terminal cannot be called: it asks for commands in its heartbeat. So a remote command
becomes one or more queue commands (`plan`), queued with the request's expiry, and its answer
follows them (`run`): `running` once the queue has sent the first one to the terminal, then the
final answer from the queue's final statuses:

| remote command | queue commands | result (`ok`) |
|---|---|---|
| device.info | `INFO` | what the terminal answered: `serial_number`, `device_name`, `firmware`, `mac`, `clock`, `user_count`, `record_count`, and every `details` line |
| device.read_now | `CHECK` | `upload_requested`: the terminal handshakes again and uploads what is newer than its stamps; the punches arrive as usual |
| device.set_time | `SET OPTIONS DateTime=…` | `set_to` (terminal-local): without a time, the gateway's clock when the queue sent it |
| device.restart | `REBOOT` | `restarted` |
| users.upsert | `DATA UPDATE USERINFO` per user | `written` (user ids; the terminal does not say created or updated) |
| users.delete | `DATA DELETE USERINFO` per user | `deleted`, `not_found` (Return -10) |

Every user is checked before anything is queued (the PIN's form, the name in the terminal's
`encoding` and `commands.MAX_NAME`): one that does not fit fails the request for that terminal
with `user_does_not_fit`, and nothing is queued. A command the terminal answers with a negative
Return is `refused` (`unsupported` for -1002), naming the code and its meaning; no Return at all
is `terminal_error`. One command expiring (nothing failed) answers `expired`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from punchgate.drivers.zk_push import commands
from punchgate.drivers.zk_push.config import ZkPushTerminal
from punchgate.gateway.commands.execute import (
    MAX_PROBLEMS_SHOWN,
    CommandFailed,
    Environment,
    checked_set_time,
)
from punchgate.gateway.push_commands import CommandStatus, PushCommandError, PushCommandQueue
from punchgate.sync.command_contract import (
    AnyRequest,
    SetTimeRequest,
    Status,
    UsersDeleteRequest,
    UserSpec,
    UsersUpsertRequest,
)

if TYPE_CHECKING:
    from punchgate.gateway.settings import Settings

SENT_POLL = 0.1  # seconds between looks at whether the queue has sent the first command
NO_SUCH_USER = -10
NOT_SUPPORTED = -1002
_QUEUE_ERRORS = {"unknown_terminal": "unknown_terminal", "bad_command": "bad_argument"}


@dataclass(frozen=True, slots=True)
class Plan:
    """The queue commands of one remote command for one terminal."""

    command: str
    texts: list[str]
    users: list[str] = field(default_factory=list)  # users.*: the user id of each text
    zone: ZoneInfo | None = None  # device.set_time: the terminal's zone
    set_to: str | None = None  # device.set_time with a time: terminal-local, ISO 8601


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status  # ok, error or expired
    result: dict[str, Any] | None = None
    error: tuple[str, str] | None = None


def terminal_config(settings: Settings, name: str) -> tuple[str, ZoneInfo]:
    """(encoding, zone) of the zk-push terminal `name`."""
    for terminal in settings.terminals:
        if terminal.name == name and isinstance(terminal, ZkPushTerminal):
            return terminal.encoding, ZoneInfo(settings.terminal_timezone(terminal))
    raise CommandFailed("unknown_terminal", f"{name} is not a zk-push terminal of this gateway")


def _user_text(user: UserSpec, encoding: str) -> str:
    """The user's DATA UPDATE USERINFO text; CommandTextError saying why it does not fit."""
    privilege = None if user.privilege is None else commands.PRIVILEGES[user.privilege]
    text = commands.update_user(
        user.user_id, name=user.name, privilege=privilege, card=user.card, password=user.password
    )
    if user.name is not None and not commands.encodable(user.name, encoding):
        raise commands.CommandTextError(f"name {user.name!r} holds characters {encoding} cannot write")
    if not commands.encodable(user.user_id, encoding):
        raise commands.CommandTextError(f"user id holds characters {encoding} cannot write")
    return text


async def plan(request: AnyRequest, *, encoding: str, zone: ZoneInfo, env: Environment) -> Plan:
    """The queue commands for `request`, or CommandFailed (nothing is queued then)."""
    command = request.command
    if command == "device.info":
        return Plan(command, [commands.info()])
    if command == "device.read_now":
        return Plan(command, [commands.check()])
    if command == "device.restart":
        return Plan(command, [commands.reboot()])
    if command == "device.set_time":
        assert isinstance(request, SetTimeRequest)
        _now, instant = await checked_set_time(request, zone, env)
        if request.args.time is None:  # the gateway's clock when it is sent: the queue writes it
            return Plan(command, [commands.set_time()], zone=zone)
        local = instant.astimezone(zone).replace(tzinfo=None, microsecond=0)
        return Plan(command, [commands.set_time(local)], zone=zone, set_to=local.isoformat())
    if command == "users.upsert":
        assert isinstance(request, UsersUpsertRequest)
        texts: list[str] = []
        problems: list[str] = []
        for user in request.args.users:
            try:
                texts.append(_user_text(user, encoding))
            except commands.CommandTextError as exc:
                problems.append(f"user {user.user_id!r}: {exc}")
        if problems:
            more = len(problems) - MAX_PROBLEMS_SHOWN
            raise CommandFailed(
                "user_does_not_fit",
                f"{len(problems)} of {len(texts) + len(problems)} users do not fit the terminal, nothing "
                "was sent: "
                + "; ".join(problems[:MAX_PROBLEMS_SHOWN])
                + (f"; and {more} more" if more > 0 else ""),
            )
        return Plan(command, texts, users=[u.user_id for u in request.args.users])
    if command == "users.delete":
        assert isinstance(request, UsersDeleteRequest)
        try:
            texts = [commands.delete_user(pin) for pin in request.args.user_ids]
        except commands.CommandTextError as exc:
            raise CommandFailed("user_does_not_fit", f"{exc}; nothing was sent") from None
        return Plan(command, texts, users=list(request.args.user_ids))
    raise CommandFailed("unsupported", f"{command} has no push command")


async def run(
    queue: PushCommandQueue,
    device: str,
    planned: Plan,
    *,
    expires_at: float,
    on_sent: Callable[[], Awaitable[None]],
) -> Outcome:
    """Queue the plan's commands (with the request's expiry), call `on_sent` once the first has
    gone to the terminal, and wait for every one to be final."""
    ids: list[str] = []
    for text in planned.texts:
        try:
            ids.append(await queue.enqueue(device, text, expires_at=expires_at))
        except PushCommandError as exc:
            if exc.code == "expired":
                return Outcome("expired")
            queued = f" ({len(ids)} queued before it still run)" if ids else ""
            raise CommandFailed(
                _QUEUE_ERRORS.get(exc.code, "terminal_error"),
                f"the push command queue refused: {exc}{queued}",
            ) from None
    while True:
        first = queue.status(ids[0])
        if first is None or first.sends > 0 or first.final:
            break
        await asyncio.sleep(SENT_POLL)
    if first is not None and first.sends > 0:
        await on_sent()
    try:
        finals = [await queue.result(command_id) for command_id in ids]
    except PushCommandError as exc:
        raise CommandFailed("terminal_error", f"the push command queue lost the command: {exc}") from None
    return outcome(device, planned, finals)


def _failure(device: str, planned: Plan, index: int, status: CommandStatus) -> tuple[str, str]:
    what = f"user {planned.users[index]!r}" if planned.users else status.command.split(" ", 1)[0]
    if status.returned is None:
        return "terminal_error", f"{device} sent no Return code for {what}"
    code = "unsupported" if status.returned == NOT_SUPPORTED else "refused"
    return code, f"{device} answered Return={status.returned} ({status.meaning}) for {what}"


def outcome(device: str, planned: Plan, finals: list[CommandStatus]) -> Outcome:
    """The remote command's final answer from the queue commands' final statuses."""
    not_found = [
        i
        for i, s in enumerate(finals)
        if planned.command == "users.delete" and s.status == "failed" and s.returned == NO_SUCH_USER
    ]
    failed = [i for i, s in enumerate(finals) if s.status == "failed" and i not in not_found]
    if failed:
        errors = [_failure(device, planned, i, finals[i]) for i in failed]
        shown = "; ".join(message for _, message in errors[:MAX_PROBLEMS_SHOWN])
        more = len(errors) - MAX_PROBLEMS_SHOWN
        done = len(finals) - len(failed)
        tail = (f"; and {more} more" if more > 0 else "") + (
            f" ({done} of {len(finals)} done)" if len(finals) > 1 else ""
        )
        return Outcome("error", error=(errors[0][0], shown + tail))
    if any(s.status == "expired" for s in finals):
        return Outcome("expired")
    return Outcome("ok", result=_result(planned, finals, not_found))


def _count(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _result(planned: Plan, finals: list[CommandStatus], not_found: list[int]) -> dict[str, Any]:
    command = planned.command
    if command == "device.info":
        details = finals[0].details
        clock = details.get("DateTime")
        return {
            "serial_number": details.get("~SerialNumber"),
            "device_name": details.get("~DeviceName"),
            "firmware": details.get("FWVersion"),
            "mac": details.get("MAC"),
            "clock": None if clock is None else clock.replace(" ", "T"),
            "user_count": _count(details.get("UserCount")),
            "record_count": _count(details.get("TransactionCount")),
            "details": dict(details),
        }
    if command == "device.read_now":
        return {"upload_requested": True}
    if command == "device.set_time":
        set_to = planned.set_to
        sent_at = finals[0].sent_at
        if set_to is None and sent_at is not None and planned.zone is not None:
            local = dt.datetime.fromtimestamp(sent_at, planned.zone).replace(tzinfo=None, microsecond=0)
            set_to = local.isoformat()
        return {"set_to": set_to}
    if command == "device.restart":
        return {"restarted": True}
    if command == "users.upsert":
        return {"written": list(planned.users)}
    missing = [planned.users[i] for i in not_found]
    return {"deleted": [u for u in planned.users if u not in missing], "not_found": missing}
