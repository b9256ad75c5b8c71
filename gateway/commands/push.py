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
| log.clear | `CHECK`; once it ran, `CLEAR LOG` and `INFO` | `cleared`, `record_count_after` (INFO's TransactionCount) |

`users.list` has no queue command (protocol 2.x cannot read users back): it is answered at once
from the user list the terminal last uploaded (`roster_users`).

`log.clear` keeps the guarded clear's promise as far as a push terminal allows: only where the
entry says `clear_log = true` and the request repeats the entry's serial number (the one the
terminal identifies itself with), and only after a `CHECK` ran, which makes the terminal upload
what is newer than its stamps before it asks for the next commands; the `CLEAR LOG` goes out in
the answer to that next request. A punch made in the moment between that upload and the
terminal's request would be cleared unsent: a realtime terminal uploads each punch as it
happens, so that moment is short, but it is not nothing (docs/mqtt-contract.md says so).

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
from punchgate.drivers.zk_push.uploads import ROSTER_SUFFIX
from punchgate.gateway.commands.execute import (
    MAX_PROBLEMS_SHOWN,
    CommandFailed,
    Environment,
    checked_set_time,
)
from punchgate.gateway.push_commands import CommandStatus, PushCommandError, PushCommandQueue
from punchgate.sync.command_contract import (
    AnyRequest,
    LogClearRequest,
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
    then: list[str] = field(default_factory=list)  # queued only once `texts` all ran (log.clear)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status  # ok, error or expired
    result: dict[str, Any] | None = None
    error: tuple[str, str] | None = None


def terminal_entry(settings: Settings, name: str) -> ZkPushTerminal:
    """The `[[terminals]]` entry of the zk-push terminal `name`."""
    for terminal in settings.terminals:
        if terminal.name == name and isinstance(terminal, ZkPushTerminal):
            return terminal
    raise CommandFailed("unknown_terminal", f"{name} is not a zk-push terminal of this gateway")


def terminal_config(settings: Settings, name: str) -> tuple[str, ZoneInfo]:
    """(encoding, zone) of the zk-push terminal `name`."""
    terminal = terminal_entry(settings, name)
    return terminal.encoding, ZoneInfo(settings.terminal_timezone(terminal))


def roster_key(name: str) -> str:
    """The device meta key under which the receiver keeps the terminal's uploaded user list."""
    return name + ROSTER_SUFFIX


def roster_users(terminal: ZkPushTerminal, stored: dict[str, Any]) -> dict[str, Any]:
    """users.list of a zk-push terminal: the user list it uploaded (OPERLOG USER lines), as the
    receiver keeps it (`stored`, {} when it uploaded none). Card numbers and passwords are not
    kept, so `card` is null for a user who has one and `password_set` says whether one is set."""
    if "OPERLOG" not in terminal.tables:
        raise CommandFailed(
            "unsupported",
            f"{terminal.name} is a zk-push terminal whose entry does not ask for OPERLOG uploads "
            "(tables), and its protocol has no command that reads users back",
        )
    kept = stored.get("users")
    users = []
    for pin, user in sorted((kept if isinstance(kept, dict) else {}).items()):
        level = user.get("privilege")
        users.append(
            {
                "user_id": pin,
                "name": user.get("name"),
                "privilege": None if not isinstance(level, int) else ("admin" if level else "user"),
                "card": None if user.get("has_card") else 0,
                "password_set": bool(user.get("has_password")),
            }
        )
    return {
        "count": len(users),
        "users": users,
        "source": "uploaded",  # not read from the terminal now: what it uploaded, as of `as_of`
        "as_of": stored.get("updated_at"),
    }


def _log_clear(request: LogClearRequest, terminal: ZkPushTerminal | None) -> Plan:
    if terminal is None:  # a caller that did not look the entry up: never clear blind
        raise CommandFailed("clear_not_allowed", "the terminal's entry was not given: nothing was cleared")
    if not terminal.clear_log:
        raise CommandFailed(
            "clear_not_allowed",
            f"terminal {terminal.name}'s config does not let the gateway clear it "
            "(clear_log = true for zk-push terminals)",
        )
    if request.args.serial != terminal.serial_number:
        raise CommandFailed(
            "serial_mismatch",
            f"terminal {terminal.name} has serial number {terminal.serial_number!r}, the request says "
            f"{request.args.serial!r}: nothing was cleared",
        )
    # CHECK first: the terminal uploads what is newer than its stamps before it asks again.
    return Plan("log.clear", [commands.check()], then=[commands.clear_log(), commands.info()])


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


async def plan(
    request: AnyRequest,
    *,
    encoding: str,
    zone: ZoneInfo,
    env: Environment,
    terminal: ZkPushTerminal | None = None,
) -> Plan:
    """The queue commands for `request`, or CommandFailed (nothing is queued then). `terminal`:
    the entry, which log.clear needs for its guards (without it, log.clear is not allowed)."""
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
    if command == "log.clear":
        assert isinstance(request, LogClearRequest)
        return _log_clear(request, terminal)
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
    ids = await _enqueue(queue, device, planned.texts, expires_at=expires_at)
    if ids is None:
        return Outcome("expired")
    while True:
        first = queue.status(ids[0])
        if first is None or first.sends > 0 or first.final:
            break
        await asyncio.sleep(SENT_POLL)
    if first is not None and first.sends > 0:
        await on_sent()
    finals = await _results(queue, ids)
    if planned.then and all(s.status == "ok" for s in finals):
        later = await _enqueue(queue, device, planned.then, expires_at=expires_at)
        if later is None:
            return Outcome("expired")
        finals += await _results(queue, later)
    return outcome(device, planned, finals)


async def _enqueue(
    queue: PushCommandQueue, device: str, texts: list[str], *, expires_at: float
) -> list[str] | None:
    """Queue `texts` in order; their ids, or None when the request expired meanwhile."""
    ids: list[str] = []
    for text in texts:
        try:
            ids.append(
                await queue.enqueue(
                    device, text, expires_at=expires_at, clearing=text == commands.clear_log()
                )
            )
        except PushCommandError as exc:
            if exc.code == "expired":
                return None
            queued = f" ({len(ids)} queued before it still run)" if ids else ""
            raise CommandFailed(
                _QUEUE_ERRORS.get(exc.code, "terminal_error"),
                f"the push command queue refused: {exc}{queued}",
            ) from None
    return ids


async def _results(queue: PushCommandQueue, ids: list[str]) -> list[CommandStatus]:
    try:
        return [await queue.result(command_id) for command_id in ids]
    except PushCommandError as exc:
        raise CommandFailed("terminal_error", f"the push command queue lost the command: {exc}") from None


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
    if command == "log.clear":
        # finals: CHECK, CLEAR LOG, INFO. The punches came in through the terminal's uploads,
        # not through this command, so there is no records_read or new to report.
        return {"cleared": True, "record_count_after": _count(finals[-1].details.get("TransactionCount"))}
    if command == "users.upsert":
        return {"written": list(planned.users)}
    missing = [planned.users[i] for i in not_found]
    return {"deleted": [u for u in planned.users if u not in missing], "not_found": missing}
