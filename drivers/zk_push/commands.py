"""Commands to push terminals: the vocabulary, the `C:<id>:<command>` lines, and their results.

Pure functions and types, no sockets and no storage (the durable queue is the gateway's,
`punchgate.gateway.push_commands`; the receiver serves it through `CommandSource`). The facts
come from /work/shared/protocols/zk-push.md ("Commands"), summarised in docs/zk-push.md:

* the server answers a `GET /iclock/getrequest` with one command per line, `C:<id>:<command>`
  (a bare `OK` when there is none); the terminal runs them in order and posts one result line
  per command to `POST /iclock/devicecmd`: `ID=<id>&Return=<code>&CMD=<command word>`, where
  INFO's `Key=Value` block follows its line;
* `Return=0` is success, and so is a count (`DATA QUERY` answers how many records it sent);
  a negative code is a failure (`RETURN_MEANINGS`).

The vocabulary is deliberately small: what the gateway exposes today. The one text that clears
a terminal, `CLEAR LOG`, is parsed here but the queue takes it only from the guarded `log.clear`
remote command (`PushCommandQueue.enqueue(..., clearing=True)`). `parse` accepts exactly these
texts and returns them in one canonical spelling:

| builder | text on the wire |
|---|---|
| `info()` | `INFO` (the terminal answers with its facts: firmware, counts, clock) |
| `check()` | `CHECK` (handshake again and upload whatever is newer than the stamps) |
| `reboot()` | `REBOOT` (nothing after it in the same answer: the terminal goes away) |
| `set_time(when)` | `SET OPTIONS DateTime=<packed>` — the terminal-local time in ZK's packed form |
| `set_time()` | `SET OPTIONS DateTime=now`: the queue writes the packed time when it sends it |
| `update_user(pin, …)` | `DATA UPDATE USERINFO PIN=…<TAB>Name=…<TAB>Pri=…` (only the fields given) |
| `delete_user(pin)` | `DATA DELETE USERINFO PIN=…` |
| `clear_log()` | `CLEAR LOG` (the attendance log; users and the operation log stay) |

`DateTime=now` is this module's spelling for "the clock at the moment it is sent" (a command
may wait hours for its terminal); it never reaches a terminal as such: `render` replaces it.

Never raises for what a terminal sent: `parse_results` returns what it understood.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import parse_qsl

from punchgate.drivers.zk_push.protocol import MAX_PIN

Kind = Literal["info", "check", "reboot", "set_time", "user_update", "user_delete", "clear_log"]
KINDS: tuple[Kind, ...] = ("info", "check", "reboot", "set_time", "user_update", "user_delete", "clear_log")

DEFAULT_PER_ANSWER = 10  # commands in one getrequest answer (a terminal entry may change it)
MAX_ANSWER_BYTES = 32 * 1024  # an answer stops growing here (leancode stops at 40 KB)
MAX_COMMAND_CHARS = 1024  # one command's text
MAX_NAME = 64  # characters of a user name (terminals show fewer; they cut it themselves)
MAX_DETAILS = 50  # Key=Value lines kept with one result (INFO's block)
NOW = "now"  # SET OPTIONS DateTime=now: the time when it is sent
PRIVILEGES = {"user": 0, "admin": 14}  # the terminal's Pri values

# What the devicecmd Return codes mean. 0 and the codes the emulator gives (-1, -3, -1002)
# are in zk-push.md; the others are the vendor's published table, not checked on a terminal.
RETURN_MEANINGS: dict[int, str] = {
    0: "done",
    -1: "bad parameter",
    -2: "the user photo does not match its given size",
    -3: "read or write error on the terminal",
    -9: "the template does not match its given size",
    -10: "no user with this PIN on the terminal",
    -11: "illegal fingerprint template format",
    -12: "illegal fingerprint template",
    -1001: "the terminal's capacity is reached",
    -1002: "not supported by this terminal",
    -1003: "the command timed out on the terminal",
    -1004: "the data does not fit the terminal's configuration",
    -1005: "the terminal is busy",
    -1006: "the data is too long",
    -1007: "memory error on the terminal",
    -1008: "the terminal could not get the data from the server",
}

_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})")
_DIGITS = re.compile(r"[0-9]{1,10}")
_ID = re.compile(r"[0-9]{1,18}")
# The USERINFO keys a command may carry, in the order they are written.
USER_KEYS = ("PIN", "Name", "Pri", "Passwd", "Card", "Grp", "TZ")
_BARE: dict[str, Kind] = {"INFO": "info", "CHECK": "check", "REBOOT": "reboot"}


class CommandTextError(ValueError):
    """A command text outside the vocabulary, or with a value a terminal cannot take."""


# --- the vocabulary ----------------------------------------------------------------------------


def info() -> str:
    return "INFO"


def check() -> str:
    return "CHECK"


def reboot() -> str:
    return "REBOOT"


def clear_log() -> str:
    return "CLEAR LOG"


def pack_time(when: dt.datetime) -> int:
    """ZK's packed clock (31-day months from 2000): 2018-02-22 14:54:54 is 583080894."""
    if when.year < 2000 or when.year > 2099:
        raise CommandTextError(
            f"time {when:%Y-%m-%d %H:%M:%S} is outside 2000-2099: a terminal cannot keep it"
        )
    days = ((when.year - 2000) * 12 + when.month - 1) * 31 + when.day - 1
    return ((days * 24 + when.hour) * 60 + when.minute) * 60 + when.second


def unpack_time(value: int) -> dt.datetime:
    second, value = value % 60, value // 60
    minute, value = value % 60, value // 60
    hour, value = value % 24, value // 24
    day, value = value % 31 + 1, value // 31
    month, year = value % 12 + 1, value // 12 + 2000
    return dt.datetime(year, month, day, hour, minute, second)


def set_time(when: dt.datetime | None = None) -> str:
    """Set the terminal's clock to `when` (its local wall time, naive); None: the time of sending."""
    if when is None:
        return f"SET OPTIONS DateTime={NOW}"
    if when.tzinfo is not None:
        raise CommandTextError("set_time takes the terminal's local wall time (a naive datetime)")
    return f"SET OPTIONS DateTime={pack_time(when)}"


def _check_value(key: str, value: str) -> str:
    if "\t" in value or any(not ch.isprintable() for ch in value):
        raise CommandTextError(f"{key}= holds a TAB, a line break or another control character")
    return value


def _check_pin(pin: str) -> str:
    if not pin or len(pin) > MAX_PIN or any(ch.isspace() or not ch.isprintable() for ch in pin):
        raise CommandTextError(f"PIN {pin[:40]!r} is not a user id (1-{MAX_PIN} characters, no spaces)")
    if "=" in pin or "&" in pin:
        raise CommandTextError(f"PIN {pin[:40]!r} holds '=' or '&'")
    return pin


def update_user(
    pin: str,
    *,
    name: str | None = None,
    privilege: int | None = None,
    password: str | None = None,
    card: int | None = None,
    group: int | None = None,
) -> str:
    """Create or change a user; fields left None are not sent (the terminal keeps or defaults them).
    `privilege`: 0 a user, 14 an admin (`PRIVILEGES`); `card` 0 clears the card."""
    fields = {"PIN": _check_pin(pin)}
    if name is not None:
        fields["Name"] = name
    if privilege is not None:
        fields["Pri"] = str(privilege)
    if password is not None:
        fields["Passwd"] = password
    if card is not None:
        fields["Card"] = str(card)
    if group is not None:
        fields["Grp"] = str(group)
    return _user_update_text(fields)


def delete_user(pin: str) -> str:
    return f"DATA DELETE USERINFO PIN={_check_pin(pin)}"


def _user_update_text(fields: dict[str, str]) -> str:
    for key, value in fields.items():
        _check_value(key, value)
    if len(fields.get("Name", "")) > MAX_NAME:
        raise CommandTextError(f"Name= is longer than {MAX_NAME} characters")
    pri = fields.get("Pri")
    if pri is not None and (not _DIGITS.fullmatch(pri) or int(pri) > 15):
        raise CommandTextError(f"Pri={pri[:20]} is not a privilege (0 user, 14 admin)")
    for key in ("Card", "Grp"):
        number = fields.get(key) or ""
        if number and (not _DIGITS.fullmatch(number) or int(number) > 0xFFFFFFFF):
            raise CommandTextError(f"{key}={number[:20]} is not a number")
    password = fields.get("Passwd")
    if password is not None and not re.fullmatch(r"[0-9]{0,8}", password):
        raise CommandTextError("Passwd= must be up to 8 digits")
    ordered = [key for key in USER_KEYS if key in fields]
    return "DATA UPDATE USERINFO " + "\t".join(f"{key}={fields[key]}" for key in ordered)


# --- parsing a command text (what the queue accepts) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: Kind
    text: str  # the canonical spelling, as it is stored and sent


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in text.split("\t"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandTextError(f"{item[:40]!r} is not Key=Value")
        if key.strip() in pairs:
            raise CommandTextError(f"{key.strip()}= appears twice")
        pairs[key.strip()] = value
    return pairs


def _time_value(value: str) -> str:
    value = value.strip()
    if value.lower() == NOW:
        return NOW
    if _DIGITS.fullmatch(value):
        when = unpack_time(int(value))  # a packed time: check it is one a terminal can keep
        return str(pack_time(when))
    match = _TIME.fullmatch(value)
    if match is None:
        raise CommandTextError(
            f"DateTime={value[:40]} is not a time: write YYYY-MM-DD HH:MM:SS (terminal-local), "
            "a packed ZK time, or now"
        )
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        when = dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise CommandTextError(f"DateTime={value[:40]} is not a valid date and time") from None
    return str(pack_time(when))


def parse(text: str) -> Parsed:
    """The command `text` in its canonical spelling, or CommandTextError saying what is wrong."""
    if not text or not text.strip():
        raise CommandTextError("the command is empty")
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandTextError(f"the command is longer than {MAX_COMMAND_CHARS} characters")
    if "\n" in text or "\r" in text:
        raise CommandTextError("the command holds a line break: one command per line")
    text = text.strip()
    words = text.split(None, 3)
    head = words[0].upper()
    if head in _BARE and len(words) == 1:
        return Parsed(_BARE[head], head)
    if head == "CLEAR" and len(words) == 2 and words[1].upper() == "LOG":
        return Parsed("clear_log", clear_log())
    if head == "SET" and len(words) >= 3 and words[1].upper() in ("OPTION", "OPTIONS"):
        key, sep, value = text.split(None, 2)[2].partition("=")
        if not sep or key.strip().lower() != "datetime":
            raise CommandTextError("SET OPTIONS takes DateTime=… only (the terminal's clock)")
        return Parsed("set_time", f"SET OPTIONS DateTime={_time_value(value)}")
    if head == "DATA" and len(words) >= 3 and words[2].upper() == "USERINFO":
        action = words[1].upper()
        record = text.split(None, 3)[3] if len(words) == 4 else ""
        if action == "UPDATE":
            return Parsed("user_update", _parse_user_update(record))
        if action == "DELETE":
            pairs = _pairs(record)
            if set(pairs) != {"PIN"}:
                raise CommandTextError("DATA DELETE USERINFO takes PIN=… only")
            return Parsed("user_delete", delete_user(pairs["PIN"]))
    raise CommandTextError(
        f"{text[:60]!r} is not a command this gateway sends: INFO, CHECK, REBOOT, "
        "SET OPTIONS DateTime=…, DATA UPDATE USERINFO PIN=…, DATA DELETE USERINFO PIN=…"
    )


def _parse_user_update(record: str) -> str:
    pairs = _pairs(record)
    by_lower = {key.lower(): key for key in USER_KEYS}
    fields: dict[str, str] = {}
    for key, value in pairs.items():
        canonical = by_lower.get(key.lower())
        if canonical is None:
            raise CommandTextError(
                f"DATA UPDATE USERINFO does not take {key[:20]}= (only {', '.join(USER_KEYS)})"
            )
        fields[canonical] = value
    if "PIN" not in fields:
        raise CommandTextError("DATA UPDATE USERINFO needs PIN=…")
    _check_pin(fields["PIN"])
    return _user_update_text(fields)


_SECRET = re.compile(r"(?<![^\t ])(Passwd|Card)=([^\t]+)")


def redact(text: str) -> str:
    """The text with the values of Passwd= and Card= masked (for logs, listings, and what is
    kept once a command is done)."""
    return _SECRET.sub(lambda m: f"{m.group(1)}=***", text)


def kind_of(text: str) -> Kind:
    return parse(text).kind


def render(text: str, local_now: dt.datetime) -> str:
    """The text as it goes out: `DateTime=now` becomes the terminal-local time `local_now`, packed."""
    if text == f"SET OPTIONS DateTime={NOW}":
        return f"SET OPTIONS DateTime={pack_time(local_now.replace(microsecond=0))}"
    return text


def command_line(command_id: int, text: str) -> str:
    return f"C:{command_id}:{text}"


def answer_body(lines: Sequence[str], encoding: str) -> bytes:
    """A getrequest answer holding `lines` (`OK` when there are none)."""
    if not lines:
        return b"OK"
    return ("\n".join(lines) + "\n").encode(encoding)


def encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """`ID=<id>&Return=<code>&CMD=<word>`, with the `Key=Value` lines that followed it (INFO)."""

    id: str
    returned: int | None  # None: no Return= or not a number
    command: str
    details: dict[str, str] = field(default_factory=dict)

    @property
    def wire_id(self) -> int | None:
        """The id as a number, when it is one (the gateway sends numbers only)."""
        return int(self.id) if _ID.fullmatch(self.id) else None


def parse_results(body: bytes, encoding: str) -> list[Result]:
    """The result lines of a devicecmd body; a line that is neither a result nor a Key=Value
    line is skipped (the receiver logs it)."""
    results: list[Result] = []
    for raw in body.split(b"\n"):
        text = raw.rstrip(b"\r").decode(encoding, errors="replace").strip()
        if text.startswith("ID="):
            pairs = dict(parse_qsl(text, keep_blank_values=True))
            returned = pairs.get("Return", "").strip()
            code = int(returned) if re.fullmatch(r"-?[0-9]{1,10}", returned) else None
            results.append(Result(pairs.get("ID", "")[:20], code, pairs.get("CMD", "")[:40], {}))
        elif "=" in text and results and len(results[-1].details) < MAX_DETAILS:
            key, _, value = text.partition("=")
            results[-1].details[key.strip()[:40]] = value.strip()[:200]
    return results


Outcome = Literal["ok", "failed"]


def outcome(returned: int | None) -> Outcome:
    """0 or a count is success; a negative code, or none at all, a failure."""
    return "ok" if returned is not None and returned >= 0 else "failed"


def meaning(returned: int | None) -> str:
    if returned is None:
        return "the terminal sent no Return code"
    if returned > 0:
        return f"done ({returned})"
    return RETURN_MEANINGS.get(returned, f"error {returned} (a code this gateway does not know)")


# --- what the receiver needs from the queue ------------------------------------------------------


class CommandSource(Protocol):
    """The gateway's command queue, as the receiver (`receiver.py`) uses it."""

    async def next_batch(self, device: str) -> list[str]:
        """The `C:<id>:<command>` lines for this heartbeat's answer ([] for none). They are
        recorded as sent, durably, before this returns."""
        ...

    async def record_results(self, device: str, results: Sequence[Result]) -> None:
        """What the terminal posted to devicecmd, matched by id."""
        ...
