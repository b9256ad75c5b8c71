"""The ADMS / iclock push protocol 2.x as text: what terminals send and what the gateway answers.

Pure functions, no sockets (the receiver in `receiver.py` serves them over HTTP). The facts
come from /work/shared/protocols/zk-push.md, summarised for operators in docs/zk-push.md:

* bodies are lines (`\\n`, some firmware `\\r\\n`) of TAB-separated fields, in the terminal's
  encoding;
* an ATTLOG line is `PIN, time, status, verify, workcode, reserved…`; the status is the pull
  protocol's state code and the verify column its verify type, so a pushed punch becomes the
  same `RawPunch` (and so gets the same record id) as the same punch pulled;
* an OPERLOG body mixes `OPLOG` (operations), `USER` (a user enrolled or changed) and `FP`
  (fingerprint templates: biometric data, only ever counted here) lines, and other kinds some
  firmware add (faces, photos), which are counted too;
* a line that cannot be parsed never stops the rest of a body: it comes back as a `BadLine`
  with its text, so the caller can keep it and say so.

Never raises for what a terminal sent: every parser returns what it understood and what it
did not.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

TABLES = ("ATTLOG", "OPERLOG", "ATTPHOTO")
MAX_KEPT_TEXT = 512  # characters of a bad line kept with it (the rest is cut, and says so)
MAX_PIN = 64  # characters of a user id; the pull protocol's longest is 24
MAX_CODE = 2**31 - 1
# YYYY-MM-DD HH:MM:SS (a T instead of the space on some firmware), ASCII digits only.
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})")
_DIGITS = re.compile(r"[0-9]{1,10}")
# ATTPHOTO's binary parts and other firmware's tables are never decoded as text.
_OPERLOG_COUNTED = ("FP", "FACE", "FVEIN", "BIODATA", "BIOPHOTO", "USERPIC", "FPLOG")


@dataclass(frozen=True, slots=True)
class BadLine:
    """One line of a body that could not be understood, as received (decoded with replacements)."""

    number: int  # 1-based line number within the body
    text: str  # cut at MAX_KEPT_TEXT characters
    problem: str
    raw_hex: str = ""  # the bytes, when the text could not show them all (undecodable bytes)

    def as_dict(self) -> dict[str, object]:
        line: dict[str, object] = {"line": self.number, "text": self.text, "problem": self.problem}
        if self.raw_hex:
            line["raw_hex"] = self.raw_hex
        return line


def _kept(text: str) -> str:
    return text if len(text) <= MAX_KEPT_TEXT else text[:MAX_KEPT_TEXT] + f"…({len(text)} chars)"


def _bad(number: int, raw: bytes, text: str, problem: str) -> BadLine:
    """A bad line as kept: its text, and its bytes too when decoding replaced some of them."""
    raw_hex = raw[:MAX_KEPT_TEXT].hex() if "\ufffd" in text else ""
    return BadLine(number, _kept(text), problem, raw_hex)


def body_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The non-empty lines of a body with their 1-based numbers (`\\r\\n` and `\\n` both end a line)."""
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if line.strip():
            yield number, line


def decode(raw: bytes, encoding: str) -> str:
    """Text of a line in the terminal's encoding; undecodable bytes become U+FFFD (never raises)."""
    return raw.decode(encoding, errors="replace")


# --- ATTLOG ------------------------------------------------------------------------------------


def _code(value: str, what: str) -> int:
    value = value.strip()
    if value.isdigit() and value.isascii() and len(value) <= 10:  # the usual case: ASCII digits
        number = int(value)
        if number <= MAX_CODE:
            return number
    if not value:
        return 0  # some firmware leave an unused column empty
    raise ValueError(f"{what} {value[:20]!r} is not a number")


def _time(value: str) -> dt.datetime:
    value = value.strip()
    try:
        if _TIME.fullmatch(value) is None:
            raise ValueError
        # Once the pattern matched, `fromisoformat` (C) reads exactly those fields, and refuses
        # what `datetime(...)` refuses (month 13, hour 24, 30 February): a fifth of the cost
        # of six int()s of slices.
        return _from_iso(value)
    except ValueError:
        raise ValueError(f"time {value[:40]!r} is not YYYY-MM-DD HH:MM:SS") from None


_from_iso = dt.datetime.fromisoformat


# --- OPERLOG -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    """An OPLOG line: `OPLOG <code>\\t<admin>\\t<time>\\t<object>\\t<p1>\\t<p2>\\t<p3>`."""

    code: int
    admin: str
    time: dt.datetime | None
    target: str
    params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class User:
    """A USER line, without its password and card number (secrets and personal data we do not need)."""

    pin: str
    name: str
    privilege: int
    group: str
    has_password: bool
    has_card: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "privilege": self.privilege,
            "group": self.group,
            "has_password": self.has_password,
            "has_card": self.has_card,
        }


@dataclass
class OperlogParse:
    operations: list[Operation] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    templates: int = 0  # biometric lines (FP, FACE, …): counted, never kept or logged
    other: int = 0  # lines of kinds this gateway does not use: counted, not kept
    bad: list[BadLine] = field(default_factory=list)
    lines: int = 0


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in text.split("\t"):
        key, sep, value = item.partition("=")
        if sep:
            pairs[key.strip()] = value
    return pairs


def parse_user(text: str) -> User:
    pairs = _pairs(text)
    pin = pairs.get("PIN", "").strip()
    if not pin or len(pin) > MAX_PIN or not pin.isprintable():
        raise ValueError("USER line without a usable PIN")
    return User(
        pin=pin,
        name=pairs.get("Name", "")[:100],
        privilege=_code(pairs.get("Pri", ""), "Pri"),
        group=pairs.get("Grp", "")[:20],
        has_password=bool(pairs.get("Passwd", "").strip()),
        has_card=bool(pairs.get("Card", "").strip().strip("[]0")),
    )


def parse_operation(text: str) -> Operation:
    fields = text.split("\t")
    code = _code(fields[0], "operation code")
    when = _time(fields[2]) if len(fields) > 2 and fields[2].strip() else None
    return Operation(
        code=code,
        admin=fields[1].strip()[:40] if len(fields) > 1 else "",
        time=when,
        target=fields[3].strip()[:40] if len(fields) > 3 else "",
        params=tuple(f.strip()[:40] for f in fields[4:7]),
    )


def parse_operlog(body: bytes, encoding: str) -> OperlogParse:
    parsed = OperlogParse()
    for number, raw in body_lines(body):
        parsed.lines += 1
        kind, _, _rest = raw.partition(b" ")
        word = kind.strip().upper().decode("ascii", errors="replace")
        if word in _OPERLOG_COUNTED:
            parsed.templates += 1  # biometric: never decoded, kept or logged
            continue
        text = decode(raw, encoding)
        rest = text.partition(" ")[2]
        try:
            if word == "OPLOG":
                parsed.operations.append(parse_operation(rest))
            elif word == "USER":
                parsed.users.append(parse_user(rest))
            else:
                parsed.other += 1  # another firmware's kind of line; nothing the gateway uses
        except ValueError as exc:
            # A bad USER line may hold a password: keep what names the line, not its values.
            if word == "USER":
                parsed.bad.append(
                    BadLine(number, "USER … (values not kept: they may hold a password)", str(exc))
                )
            else:
                parsed.bad.append(_bad(number, raw, text, str(exc)))
    return parsed


# --- device command results and INFO ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandResult:
    """`ID=<id>&Return=<code>&CMD=<command>`: a command's outcome (Return=0 is success)."""

    id: str
    returned: int | None
    command: str


@dataclass
class DeviceCmdParse:
    results: list[CommandResult] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # key=value lines (the answer to INFO)
    bad: list[BadLine] = field(default_factory=list)


def parse_devicecmd(body: bytes, encoding: str) -> DeviceCmdParse:
    parsed = DeviceCmdParse()
    for number, raw in body_lines(body):
        text = decode(raw, encoding).strip()
        if text.startswith("ID="):
            pairs = dict(parse_qsl(text, keep_blank_values=True))
            returned = pairs.get("Return", "")
            value = int(returned) if re.fullmatch(r"-?[0-9]{1,10}", returned) else None
            parsed.results.append(CommandResult(pairs.get("ID", "")[:20], value, pairs.get("CMD", "")[:40]))
        elif "=" in text:
            key, _, fact = text.partition("=")
            if len(parsed.facts) < 100:
                parsed.facts[key.strip()[:40]] = fact.strip()[:200]
        else:
            parsed.bad.append(BadLine(number, _kept(text), "not a command result (ID=…&Return=…&CMD=…)"))
    return parsed


INFO_FIELDS = ("firmware", "user_count", "fingerprint_count", "record_count", "ip", "fingerprint_version")


def parse_info(value: str) -> dict[str, str]:
    """getrequest's INFO= (FWVersion,UserCount,FPCount,AttCount,IP,FPVersion,…) by position."""
    parts = [part.strip()[:80] for part in value.split(",")]
    return {name: part for name, part in zip(INFO_FIELDS, parts, strict=False) if part}


def count(value: str | None) -> int | None:
    """A non-negative count a terminal reported, or None."""
    if value is None or not _DIGITS.fullmatch(value.strip()):
        return None
    return int(value.strip())


# --- the handshake reply -----------------------------------------------------------------------

SERVER_VERSION = "2.4.1"
# TransFlag as named tokens (push 2.x) per table, and the older 10-character bit string.
_TRANS_TOKENS: Mapping[str, tuple[str, ...]] = {
    "ATTLOG": ("AttLog",),
    "OPERLOG": ("OpLog", "EnrollUser", "ChgUser"),
    "ATTPHOTO": ("AttPhoto",),
}


def trans_flag(tables: Sequence[str], *, named: bool) -> str:
    """What the terminal is asked to upload. Never fingerprints (EnrollFP, ChgFP)."""
    if named:
        tokens = [token for table in TABLES if table in tables for token in _TRANS_TOKENS[table]]
        return "TransData " + "\t".join(tokens)
    bits = [
        "ATTLOG" in tables,  # 1 attendance log
        "OPERLOG" in tables,  # 2 operation log
        "ATTPHOTO" in tables,  # 3 attendance photos
        "OPERLOG" in tables,  # 4 enrolled users
        "OPERLOG" in tables,  # 5 changed users
    ]
    return "".join("1" if bit else "0" for bit in bits).ljust(10, "0")


def timezone_option(offset: dt.timedelta) -> str:
    """The `TimeZone` option: hours east of UTC (5.5 for India, -3 for Brazil)."""
    hours = offset.total_seconds() / 3600
    return f"{hours:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the gateway tells a terminal at its handshake."""

    stamps: Mapping[str, str]  # table -> the last stamp stored ("0": send everything)
    utc_offset: dt.timedelta
    realtime: bool
    delay: int
    error_delay: int
    trans_interval: int
    tables: Sequence[str]


def option_block(serial: str, options: Options, *, pushver: str | None) -> str:
    """The handshake reply. Firmware that says its `pushver` gets the 2.x names
    (ATTLOGStamp, named TransFlag), older firmware Stamp/OpStamp/PhotoStamp and bits; 3.x
    attendance firmware both names (docs/zk-push.md, "Protocol 3.x")."""
    stamp = {table: options.stamps.get(table) or "0" for table in TABLES}
    old_names = [
        f"Stamp={stamp['ATTLOG']}",
        f"OpStamp={stamp['OPERLOG']}",
        f"PhotoStamp={stamp['ATTPHOTO']}",
    ]
    if not pushver:
        stamps = old_names
    else:
        stamps = [f"{table}Stamp={stamp[table]}" for table in TABLES]
        if pushver.startswith("3"):
            # A 3.x attendance server seen (kittiu/thai_zkt) answers the old names: both, same values.
            stamps += old_names
    lines = [
        f"GET OPTION FROM: {serial}",
        *stamps,
        f"ErrorDelay={options.error_delay}",
        f"Delay={options.delay}",
        "TransTimes=00:00;14:05",
        f"TransInterval={options.trans_interval}",
        f"TransFlag={trans_flag(options.tables, named=bool(pushver))}",
        f"TimeZone={timezone_option(options.utc_offset)}",
        f"Realtime={1 if options.realtime else 0}",
        "Encrypt=0",
        f"ServerVer={SERVER_VERSION}",
    ]
    return "\n".join(lines) + "\n"


def stamp_value(value: str | None) -> str | None:
    """A request's Stamp= as kept: digits only (anything else is not a stamp we can compare)."""
    if value is None:
        return None
    value = value.strip()
    return value if _DIGITS.fullmatch(value) else None
