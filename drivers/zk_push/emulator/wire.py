"""What a push terminal (protocol 2.x) writes and reads on the wire, as plain functions.

Lines are TAB-separated and joined by LF (zk-push.md). The emulator's stamps are its own
record sequence numbers (1, 2, … in log order): the terminal posts `Stamp=<seq of the last
line in the post>` and keeps the stamp it was told back in the handshake. Real firmware uses
an opaque, time-derived counter; a receiver must only store and echo it, never interpret it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Final

TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

# Defaults a terminal falls back on when the handshake reply leaves a key out.
DEFAULT_DELAY: Final = 30.0
DEFAULT_ERROR_DELAY: Final = 30.0
DEFAULT_TRANS_INTERVAL_MINUTES: Final = 2.0


@dataclass(frozen=True, slots=True)
class PushRecord:
    """One attendance record in the terminal's log."""

    seq: int  # the terminal's stamp for this record; restarts at 1 after a factory reset
    user_id: str
    when: datetime  # terminal-local wall time, naive, as the clock showed it
    state: int = 0
    verify: int = 1
    workcode: str = "0"

    def line(self) -> str:
        """`PIN\\tYYYY-MM-DD HH:MM:SS\\tstatus\\tverify\\tworkcode\\t0\\t0`."""
        return (
            f"{self.user_id}\t{self.when.strftime(TIME_FORMAT)}\t{self.state}\t{self.verify}"
            f"\t{self.workcode}\t0\t0"
        )


@dataclass(slots=True)
class PushUser:
    pin: str
    name: str
    privilege: int = 0
    password: str = ""
    card: str = ""
    group: int = 1
    timezones: str = "0000000000000000"

    def line(self) -> str:
        """The OPERLOG `USER` line announcing this user."""
        return (
            f"USER PIN={self.pin}\tName={self.name}\tPri={self.privilege}\tPasswd={self.password}"
            f"\tCard={self.card}\tGrp={self.group}\tTZ={self.timezones}"
        )


@dataclass(frozen=True, slots=True)
class OperEntry:
    """One operation-log line (`USER …` or `OPLOG …`) with its OPERLOG stamp."""

    seq: int
    text: str


def oplog_line(
    code: int, when: datetime, *, admin: str = "0", obj: str = "0", params: tuple[str, ...] = ()
) -> str:
    """`OPLOG <code>\\t<admin>\\t<time>\\t<object>\\t<p1>\\t<p2>\\t<p3>` (22: factory reset)."""
    p1, p2, p3 = (*params, "0", "0", "0")[:3]
    return f"OPLOG {code}\t{admin}\t{when.strftime(TIME_FORMAT)}\t{obj}\t{p1}\t{p2}\t{p3}"


@dataclass(frozen=True, slots=True)
class TransFlag:
    attlog: bool = True
    operlog: bool = True


def parse_trans_flag(value: str | None) -> TransFlag:
    """Which tables the server wants pushed: a bit string (`1111000000`: bit 1 ATTLOG, 2 OpLog,
    5 EnrollUser, 7 ChgUser) or named tokens (`TransData AttLog OpLog EnrollUser …`)."""
    if value is None or not value.strip():
        return TransFlag()
    text = value.strip()
    if set(text) <= {"0", "1"}:
        bits = text.ljust(10, "0")
        return TransFlag(attlog=bits[0] == "1", operlog="1" in (bits[1], bits[4], bits[6]))
    tokens = {t.lower() for t in re.split(r"[\s,;]+", text) if t}
    return TransFlag(attlog="attlog" in tokens, operlog=bool(tokens & {"oplog", "enrolluser", "chguser"}))


def _stamp(value: str | None) -> int | None:
    """A stamp from the reply; `None`, blank or non-numeric: the server has none."""
    if value is None:
        return None
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return None


def _seconds(value: str | None, default: float) -> float:
    try:
        number = float(value) if value is not None else default
    except ValueError:
        return default
    return number if number >= 0 else default


def _trans_times(value: str | None) -> tuple[time, ...]:
    times: list[time] = []
    for part in (value or "").split(";"):
        hour, sep, minute = part.strip().partition(":")
        if sep and hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60:
            times.append(time(int(hour), int(minute)))
    return tuple(times)


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The handshake reply (`GET OPTION FROM: SN` then `Key=Value` lines), interpreted."""

    raw: dict[str, str] = field(default_factory=dict)
    attlog_stamp: int | None = None
    operlog_stamp: int | None = None
    delay: float = DEFAULT_DELAY
    error_delay: float = DEFAULT_ERROR_DELAY
    realtime: bool | None = None  # None: the reply did not say; the terminal's own setting holds
    trans_interval_minutes: float = DEFAULT_TRANS_INTERVAL_MINUTES
    trans_times: tuple[time, ...] = ()
    trans_flag: TransFlag = TransFlag()
    timezone: str | None = None


def parse_options(text: str) -> ServerOptions:
    raw: dict[str, str] = {}
    for line in text.replace("\r", "\n").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("GET OPTION FROM"):
            raw[key.strip()] = value.strip()
    # pushver-aware servers name the stamps ATTLOGStamp/OPERLOGStamp, older ones Stamp/OpStamp.
    realtime = raw.get("Realtime")
    return ServerOptions(
        raw=raw,
        attlog_stamp=_stamp(raw.get("ATTLOGStamp", raw.get("Stamp"))),
        operlog_stamp=_stamp(raw.get("OPERLOGStamp", raw.get("OpStamp"))),
        delay=_seconds(raw.get("Delay"), DEFAULT_DELAY),
        error_delay=_seconds(raw.get("ErrorDelay"), DEFAULT_ERROR_DELAY),
        realtime=None if realtime is None else realtime.strip() == "1",
        trans_interval_minutes=_seconds(raw.get("TransInterval"), DEFAULT_TRANS_INTERVAL_MINUTES),
        trans_times=_trans_times(raw.get("TransTimes")),
        trans_flag=parse_trans_flag(raw.get("TransFlag")),
        timezone=raw.get("TimeZone"),
    )


def parse_ok_count(text: str) -> int | None:
    """`OK: 12` / `OK:12` -> 12; a bare `OK` -> None. Raises ValueError for anything else."""
    stripped = text.strip()
    if not stripped.startswith("OK"):
        raise ValueError(f"not an OK answer: {stripped[:40]!r}")
    match = re.match(r"OK\s*:?\s*(\d+)", stripped)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    text: str  # everything after `C:<id>:`

    @property
    def name(self) -> str:
        """The `CMD=` value of the result: the command's first word (`DATA`, `INFO`, `REBOOT`…);
        two-word commands keep both (`SET OPTION`, `RELOAD OPTIONS`; `CLEAR LOG` -> `CLEAR_LOG`)."""
        words = self.text.split()
        if not words:
            return ""
        head = words[0].upper()
        if head == "CLEAR" and len(words) > 1:
            return f"CLEAR_{words[1].upper()}"
        if head in ("SET", "RELOAD") and len(words) > 1:
            return f"{head} {words[1].upper()}"
        return head


def parse_commands(text: str) -> list[Command]:
    """The command lines of a getrequest answer (`OK` alone: none)."""
    commands: list[Command] = []
    for line in text.replace("\r", "").split("\n"):
        if not line.startswith("C:"):
            continue
        _, command_id, rest = line.split(":", 2) if line.count(":") >= 2 else (line, "", "")
        if command_id:
            commands.append(Command(command_id, rest))
    return commands


def result_line(command: Command, code: int) -> str:
    return f"ID={command.id}&Return={code}&CMD={command.name}"


def key_values(text: str) -> dict[str, str]:
    """`Key=Value` pairs separated by TABs (or commas where no TAB is used)."""
    parts = text.split("\t") if "\t" in text else text.split(",")
    pairs: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = value
    return pairs


def decode_zk_time(value: int) -> datetime:
    """The ZK encoded time (seconds in a calendar of 31-day months from 2000)."""
    second = value % 60
    value //= 60
    minute = value % 60
    value //= 60
    hour = value % 24
    value //= 24
    day = value % 31 + 1
    value //= 31
    month = value % 12 + 1
    year = value // 12 + 2000
    return datetime(year, month, day, hour, minute, second)


def encode_zk_time(when: datetime) -> int:
    days = ((when.year - 2000) * 12 + when.month - 1) * 31 + when.day - 1
    return ((days * 24 + when.hour) * 60 + when.minute) * 60 + when.second


def parse_device_time(text: str) -> datetime:
    """`SET OPTION DateTime=`: a ZK encoded integer or `YYYY-MM-DD HH:MM:SS`."""
    value = text.strip()
    if value.isdigit():
        return decode_zk_time(int(value))
    return datetime.strptime(value.replace("T", " "), TIME_FORMAT)
