"""What every terminal's config entry shares, and the strict model base the drivers build on.

Each driver package owns the model of its own `[[terminals]]` entry (a subclass of
`TerminalConfig` with a literal `type`); `punchgate.gateway.settings` only composes them into
the config file's discriminated union. Unknown keys are rejected everywhere: a typo must never
be silently ignored on a site whose payroll depends on this file.

Values are strictly typed: `port = "4370"` is an error, not a number in disguise, and
`insecure = "yes"` is not `true`. Every message says what to write instead, because the
person reading it is on site with a text editor, not a debugger.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Port = Annotated[int, Field(ge=1, le=65535)]

# Abbreviations people write for a zone. None of them is an IANA name (or, like "EST", only a
# fixed offset without daylight saving), so each maps to the zones it usually means.
_ZONE_ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "CST": ("Asia/Shanghai", "America/Chicago", "Asia/Taipei", "America/Mexico_City"),
    "CDT": ("America/Chicago",),
    "EDT": ("America/New_York",),
    "PST": ("America/Los_Angeles", "Asia/Manila"),
    "PDT": ("America/Los_Angeles",),
    "MDT": ("America/Denver",),
    "AKST": ("America/Anchorage",),
    "IST": ("Asia/Kolkata", "Europe/Dublin", "Asia/Jerusalem"),
    "BST": ("Europe/London", "Asia/Dhaka"),
    "CEST": ("Europe/Berlin", "Europe/Paris", "Europe/Warsaw"),
    "EEST": ("Europe/Athens", "Europe/Helsinki", "Europe/Bucharest"),
    "WEST": ("Europe/Lisbon",),
    "MSK": ("Europe/Moscow",),
    "JST": ("Asia/Tokyo",),
    "KST": ("Asia/Seoul",),
    "HKT": ("Asia/Hong_Kong",),
    "SGT": ("Asia/Singapore",),
    "MYT": ("Asia/Kuala_Lumpur",),
    "PHT": ("Asia/Manila",),
    "ICT": ("Asia/Bangkok", "Asia/Ho_Chi_Minh"),
    "WIB": ("Asia/Jakarta",),
    "PKT": ("Asia/Karachi",),
    "GST": ("Asia/Dubai",),
    "AEST": ("Australia/Sydney", "Australia/Brisbane"),
    "AEDT": ("Australia/Sydney",),
    "ACST": ("Australia/Adelaide", "Australia/Darwin"),
    "AWST": ("Australia/Perth",),
    "NZST": ("Pacific/Auckland",),
    "NZDT": ("Pacific/Auckland",),
    "SAST": ("Africa/Johannesburg",),
    "WAT": ("Africa/Lagos",),
    "EAT": ("Africa/Nairobi",),
    "BRT": ("America/Sao_Paulo",),
    "ART": ("America/Argentina/Buenos_Aires",),
}


@functools.cache
def _zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def timezone_suggestions(value: str) -> list[str]:
    """IANA names someone who wrote `value` probably meant, best first (at most five)."""
    wanted = value.strip()
    found = list(_ZONE_ABBREVIATIONS.get(wanted.upper(), ()))
    offset = re.fullmatch(r"(?:UTC|GMT)\s*([+-])\s*(\d{1,2})(?::?00)?", wanted, re.IGNORECASE)
    if offset and int(offset[2]) <= 14:
        # POSIX signs are inverted: UTC+8 is Etc/GMT-8. A city zone is better still.
        found.append(f"Etc/GMT{'-' if offset[1] == '+' else '+'}{int(offset[2])}")
    zones = _zones()
    by_lower = {zone.lower(): zone for zone in zones}
    key = wanted.replace(" ", "_").lower()
    if key in by_lower:
        found.append(by_lower[key])
    found += [zone for zone in zones if zone.lower().rsplit("/", 1)[-1] == key]
    found += [by_lower[m] for m in difflib.get_close_matches(key, list(by_lower), n=3, cutoff=0.8)]
    return list(dict.fromkeys(found))[:5]


def check_timezone(value: str | None) -> str | None:
    """The value if it names an IANA zone this machine knows; ValueError saying so otherwise."""
    if value is None:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    else:
        return value
    shown = value if len(value) <= 64 else value[:61] + "..."
    hints = timezone_suggestions(value[:200])
    if hints:
        raise ValueError(f"unknown IANA timezone {shown!r}; did you mean one of: {', '.join(hints)}?")
    raise ValueError(
        f"unknown IANA timezone {shown!r}; write a zone name such as Europe/Berlin or "
        "America/Chicago (`timedatectl list-timezones` lists them)"
    )


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_host(value: str, *, port_key: str = "port") -> str:
    """`value` if it is an IPv4/IPv6 address or an RFC 1123 host name; ValueError saying what to write.

    `port_key` names the key that takes the port, for `"1.2.3.4:4370"`. The twin of this
    function in punchgate.sync.settings must stay the same (sync does not import drivers);
    tests/gateway/test_config_hosts.py holds both to one table.
    """
    shown = value if len(value) <= 64 else value[:61] + "..."
    if value != value.strip():
        raise ValueError(f"{shown!r} has spaces around it: remove them")
    if not value:
        raise ValueError("must not be empty: write a host name or an IP address, e.g. 192.0.2.10")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return value
    if "://" in value:
        raise ValueError(f"{shown!r} is a URL: write only the host name or address")
    with_port = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", value)
    if with_port:
        raise ValueError(
            f"{shown!r} has a port in it: put the port in `{port_key}` and write only {with_port[1]!r} here"
        )
    if value.startswith("["):
        raise ValueError(f"{shown!r}: write an IPv6 address without brackets")
    if re.fullmatch(r"[0-9.]+", value):
        raise ValueError(f"{shown!r} is not a valid IPv4 address (four numbers 0-255, e.g. 192.168.1.30)")
    odd = sorted({c for c in value if not (c.isascii() and c.isalnum()) and c not in "-."})
    if odd:
        chars = " ".join(repr(c) for c in odd[:5])
        raise ValueError(
            f"{shown!r} is not a valid host name: it contains {chars}; "
            "a host name holds only letters, digits, '-' and '.'"
        )
    name = value.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"{shown!r} is not a valid host name: write dot-separated labels of 1-63 letters, digits "
            "and '-', none starting or ending with '-'"
        )
    return value


def host_key(host: str) -> str:
    """One spelling per host, to tell whether two entries name the same one (no DNS lookups)."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower().removesuffix(".")


def config_problems(title: str, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """A ValidationError putting each message at its own key, for checks that span several keys.

    Raised from a model validator, pydantic prefixes the locations with the model's own, so
    the message lands on `terminals[3].port` rather than on the whole file.
    """
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{error}", {"error": message}), loc=loc, input=None
            )
            for loc, message in problems
        ],
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """Something a terminal occupies, so that two terminals in one file cannot both have it.

    Two enabled terminals with the same `key` clash, unless both give `terms` and they are
    equal: a shared resource (one serial line) that every user must use on the same terms.
    """

    key: str  # one spelling, e.g. "tcp 192.0.2.1:4370"
    label: str  # for people, e.g. "TCP 192.0.2.1:4370"
    field: str  # the key the message is filed under, e.g. "port"
    fix: str  # what to do, e.g. "give each terminal its own host and port"
    terms: str | None = None


class Strict(BaseModel):
    """Frozen, unknown keys forbidden, no nan or inf, defaults validated too.

    Values are coerced the lax pydantic way ("4370" is 4370); `StrictTyped` is the stricter
    base every section should use. `Strict` remains for sections that have not moved yet.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class StrictTyped(Strict):
    """`Strict`, and values must have the type the key takes: no "4370" for a number, no "yes"
    for true, no 5 for a string. TOML has no path type, so `Path` fields need `strict=False`.
    """

    model_config = ConfigDict(strict=True)


# The distinct `model_fields_set`s of the terminals' entries (`TerminalConfig.model_post_init`):
# a handful in any config file (entries differ in which keys they set, not in many ways).
_SHARED_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class TerminalConfig(StrictTyped):
    """Keys every terminal type has. Drivers subclass it and add `type` and their own keys."""

    # Keys people put on this family's entry by mistake, and what to write instead.
    key_hints: ClassVar[dict[str, str]] = {}

    type: str
    name: str = Field(pattern=NAME_PATTERN, description="unique terminal name, used in topics and logs")
    timezone: str | None = Field(None, description="IANA timezone of the terminal's clock; default: site's")
    poll_interval: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="seconds between polls; a poll reads the log only when it may hold something new, and in full at least every full_read_every",
    )
    # Why an hour and not every few polls: the count and the last stored record already catch
    # every new record, a cleared log and a log overwritten at capacity (gateway/worker.py);
    # this bound is only for a log cleared and refilled to exactly its old count. A whole read
    # moves the terminal's entire log (tens of thousands of records where logs are never
    # cleared: seconds of a busy terminal), so every few polls it cost more than everything
    # else a poll does (docs/performance.md, "Fleet").
    full_read_every: float = Field(
        3600.0,
        ge=1,
        le=7 * 86400,
        description="seconds: a poll reads the whole log at least this often even when its count says nothing is new (a log cleared and refilled to the same count), counted from the last whole read, across restarts",
    )
    enabled: bool = Field(True, description="set false to keep a terminal in the file but not read it")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return check_timezone(value)

    def model_post_init(self, context: Any, /) -> None:
        """Terminals whose entries set the same keys share one set of those names (pydantic's
        `model_fields_set`): a set of seven names is 728 bytes, held by every terminal of a
        fleet for the daemon's life (issue 18). Safe because the model is frozen: pydantic
        changes a model's set in place only on assignment, which a frozen model refuses;
        `model_copy` and `copy` give the copy a set of its own first."""
        names = self.__pydantic_fields_set__
        shared = _SHARED_FIELDS_SETS.setdefault(frozenset(names), names)
        if shared is not names:
            object.__setattr__(self, "__pydantic_fields_set__", shared)

    def claims(self) -> tuple[Claim, ...]:
        """What this terminal occupies (an address, a device id on a bus); none by default."""
        return ()
