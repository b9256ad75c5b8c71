"""Server commands (`C:<id>:<command>` lines of a getrequest answer) as the terminal runs them.

Each command gives one result line, `ID=<id>&Return=<code>&CMD=<first word>` (INFO adds its
`Key=Value` lines below it), and possibly something the terminal does next: start over with
a handshake (CHECK, RELOAD OPTIONS), upload now (LOG), or reboot (REBOOT, after the results
are posted). Return codes are the vendor's: 0 success, -1 bad parameter, -3 read/write error,
-1002 not supported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from punchgate.drivers.zk_push.emulator.wire import (
    TIME_FORMAT,
    Command,
    PushUser,
    key_values,
    parse_device_time,
    result_line,
)

if TYPE_CHECKING:
    from punchgate.drivers.zk_push.emulator.terminal import ZkPushEmulator

OK = 0
BAD_PARAMETER = -1
READ_WRITE_ERROR = -3
NOT_SUPPORTED = -1002

Effect = Literal["handshake", "upload", "reboot"] | None


@dataclass(slots=True)
class Outcome:
    code: int
    effect: Effect = None
    extra: list[str] = field(default_factory=list)  # INFO's Key=Value lines

    def result(self, command: Command) -> str:
        return "\n".join([result_line(command, self.code), *self.extra])


Handler = Callable[["ZkPushEmulator", str], Awaitable[Outcome]]


async def execute(terminal: ZkPushEmulator, command: Command) -> Outcome:
    words = command.text.split(None, 1)
    verb = words[0].upper() if words else ""
    rest = words[1] if len(words) > 1 else ""
    handler = _HANDLERS.get(verb)
    if handler is None:
        return Outcome(NOT_SUPPORTED)
    return await handler(terminal, rest)


async def _info(terminal: ZkPushEmulator, _: str) -> Outcome:
    return Outcome(OK, extra=terminal.info_lines())


async def _check(_terminal: ZkPushEmulator, _: str) -> Outcome:
    return Outcome(OK, effect="handshake")  # read the options and stamps again, upload from them


async def _log(_terminal: ZkPushEmulator, _: str) -> Outcome:
    return Outcome(OK, effect="upload")


async def _reboot(_terminal: ZkPushEmulator, _: str) -> Outcome:
    return Outcome(OK, effect="reboot")


async def _reload(_terminal: ZkPushEmulator, rest: str) -> Outcome:
    return Outcome(OK, effect="handshake") if rest.upper().startswith("OPTION") else Outcome(NOT_SUPPORTED)


async def _clear(terminal: ZkPushEmulator, rest: str) -> Outcome:
    what = rest.strip().upper()
    if what == "LOG":
        terminal.clear_log()
    elif what == "DATA":
        terminal.clear_log()
        terminal.users.clear()
    elif what != "PHOTO":
        return Outcome(NOT_SUPPORTED)
    return Outcome(OK)


async def _set(terminal: ZkPushEmulator, rest: str) -> Outcome:
    """`SET OPTION Key=Value` (also `SET OPTIONS`, several pairs); `DateTime` sets the clock."""
    kind, _, pairs_text = rest.partition(" ")
    if kind.upper() not in ("OPTION", "OPTIONS"):
        return Outcome(NOT_SUPPORTED)
    pairs = key_values(pairs_text)
    if not pairs:
        return Outcome(BAD_PARAMETER)
    for key, value in pairs.items():
        if key.lower() == "datetime":
            try:
                terminal.set_clock(parse_device_time(value))
            except (ValueError, OverflowError):
                return Outcome(BAD_PARAMETER)
        terminal.device_options[key] = value
    return Outcome(OK)


async def _data(terminal: ZkPushEmulator, rest: str) -> Outcome:
    """`DATA UPDATE|DELETE USERINFO …` and `DATA QUERY ATTLOG StartTime=…\\tEndTime=…`."""
    action, _, rest = rest.partition(" ")
    table, _, record = rest.partition(" ")
    action, table = action.upper(), table.upper()
    if table in ("USERINFO", "USER") and action == "UPDATE":
        return _update_user(terminal, key_values(record))
    if table in ("USERINFO", "USER") and action == "DELETE":
        pin = _field(key_values(record), "pin")
        if not pin:
            return Outcome(BAD_PARAMETER)
        terminal.users.pop(pin, None)  # deleting a user the terminal lacks still succeeds
        return Outcome(OK)
    if table == "ATTLOG" and action == "QUERY":
        return await _query_attlog(terminal, key_values(record))
    return Outcome(NOT_SUPPORTED)


def _field(pairs: dict[str, str], *names: str) -> str | None:
    lowered = {key.lower(): value for key, value in pairs.items()}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _update_user(terminal: ZkPushEmulator, pairs: dict[str, str]) -> Outcome:
    pin = _field(pairs, "pin")
    if not pin:
        return Outcome(BAD_PARAMETER)
    user = terminal.users.get(pin) or PushUser(pin=pin, name="")
    try:
        user.name = _field(pairs, "name") or user.name
        user.privilege = int(_field(pairs, "pri", "privilege") or user.privilege)
        user.password = _field(pairs, "passwd", "password") or user.password
        user.card = _field(pairs, "card", "cardno") or user.card
        user.group = int(_field(pairs, "grp", "group") or user.group)
        user.timezones = _field(pairs, "tz") or user.timezones
    except ValueError:
        return Outcome(BAD_PARAMETER)
    terminal.users[pin] = user
    return Outcome(OK)


async def _query_attlog(terminal: ZkPushEmulator, pairs: dict[str, str]) -> Outcome:
    """Uploads the records in [StartTime, EndTime] (posts without a Stamp: a query answer does not
    move the stamp); Return is how many there were, or -3 when the upload failed."""
    try:
        start = datetime.strptime((_field(pairs, "starttime") or "").strip(), TIME_FORMAT)
        end = datetime.strptime((_field(pairs, "endtime") or "").strip(), TIME_FORMAT)
    except ValueError:
        return Outcome(BAD_PARAMETER)
    matching = [r for r in terminal.records if start <= r.when <= end]
    if not await terminal.upload_query_answer(matching):
        return Outcome(READ_WRITE_ERROR)
    return Outcome(len(matching))


_HANDLERS: dict[str, Handler] = {
    "INFO": _info,
    "CHECK": _check,
    "LOG": _log,
    "REBOOT": _reboot,
    "RELOAD": _reload,
    "CLEAR": _clear,
    "SET": _set,
    "DATA": _data,
}
