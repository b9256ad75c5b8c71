"""The configuration file's schema: one TOML file, composed from the components' own models.

Each component owns its settings: every driver its `[[terminals]]` entry (see
`punchgate.drivers.registry`), the buffer and the forwarder theirs (`punchgate.sync.settings`).
This module adds the gateway's own sections (http, health) and composes the whole. Unknown
keys are rejected everywhere (a typo must never be silently ignored on a site that depends on
this config for payroll). Secrets may stay out of the file: see `punchgate.gateway.secrets`.

What a bad file gets is a `ConfigError` listing `key.path: message` lines, each saying what to
write instead; never a traceback. Checks that span keys (two terminals on one address, names
whose comm-key variables collide) live in `Settings`' validators; checks that look at this
machine's files (the TLS files) run only when a file is loaded (`load_settings`), because a
model may describe another machine.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast, get_args

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from punchgate.drivers.config import (
    NAME_PATTERN,
    Claim,
    Port,
    Strict,
    StrictTyped,
    TerminalConfig,
    check_host,
    check_timezone,
    config_problems,
)
from punchgate.drivers.registry import DRIVERS
from punchgate.gateway.commands.settings import CommandsSettings
from punchgate.gateway.secrets import SecretError, apply_secrets, comm_key_env_name
from punchgate.sync.audit import AuditSettings
from punchgate.sync.manual import ManualSettings
from punchgate.sync.settings import BufferSettings, MqttSettings

Loc = tuple[str | int, ...]
NO_TERMINALS = "terminals: no [[terminals]]: add one (see config/punchgate.example.toml)"
NESTED_TOO_DEEPLY = (
    "(file): nested too deeply (arrays or tables inside each other hundreds of levels deep); "
    "no punchgate key nests more than four levels: is this the right file?"
)
MAX_CONFIG_BYTES = 1 << 20  # a real config is a few KB; anything near this is the wrong file


def check_bind(value: str) -> str:
    """`value` if it can be listened on (an IP address or a host name); ValueError saying what to write.

    For `HttpSettings.bind`. Until that model calls it from a field validator, `Settings`
    applies it (a message at `http.bind`).
    """
    return check_host(value)


class HttpSettings(Strict):
    enabled: bool = Field(True, description="serve /metrics, /healthz and /api")
    bind: str = Field("127.0.0.1", description="address to listen on (loopback by default)")
    port: Port = Field(9108, description="port to listen on")
    token_file: Path | None = Field(
        None,
        description="file holding the API token that POST requests must send; "
        "default: api/token in the buffer's folder, created at first start",
    )
    allowed_hosts: list[str] = Field(
        [],
        description="extra names (NAME or NAME:PORT) the API answers to in Host and Origin, "
        "besides loopback and the bind address",
    )
    tls_cert_file: Path | None = Field(
        None, strict=False, description="certificate (PEM) to serve HTTPS with; needs tls_key_file"
    )
    tls_key_file: Path | None = Field(None, strict=False, description="private key (PEM) of tls_cert_file")
    allow_plain_http: bool = Field(
        False,
        description="serve plain HTTP on an address beyond loopback (passwords and sessions then "
        "cross the network readable); without it such a bind needs tls_cert_file and tls_key_file",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?", entry):
                raise ValueError(
                    f"{entry!r} is not a host name, address or [IPv6 address], with an optional :PORT"
                )
        return [entry.lower() for entry in value]

    @model_validator(mode="after")
    def _tls_beyond_loopback(self) -> HttpSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            raise config_problems(
                "HttpSettings", [((missing,), "HTTPS needs both tls_cert_file and tls_key_file")]
            )
        try:
            check_bind(self.bind)
        except ValueError:
            return self  # Settings says what is wrong with the address itself
        if self.enabled and not self.tls and not self.allow_plain_http and not is_loopback_bind(self.bind):
            raise config_problems(
                "HttpSettings",
                [
                    (
                        ("bind",),
                        f"{self.bind!r} is beyond loopback: set tls_cert_file and tls_key_file (HTTPS), "
                        'or allow_plain_http = true to serve plain HTTP there, or bind = "127.0.0.1"',
                    )
                ],
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    def serving(self) -> str:
        """How the API and console are served, for check-config: loopback, HTTPS or plain HTTP."""
        if self.tls:
            return f"http: HTTPS on {self.bind}:{self.port} (tls_cert_file {self.tls_cert_file})"
        if is_loopback_bind(self.bind):
            return f"http: plain HTTP on loopback {self.bind}:{self.port} (this machine only)"
        return (
            f"http: plain HTTP on {self.bind}:{self.port} (allow_plain_http = true): passwords and "
            "sessions cross the network readable; prefer tls_cert_file and tls_key_file"
        )


def is_loopback_bind(bind: str) -> bool:
    """Whether `bind` listens on loopback only (127.0.0.0/8, ::1, localhost)."""
    host = bind.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HealthSettings(StrictTyped):
    """Thresholds for device faults; each terminal may override them."""

    log_full_ratio: float = Field(0.9, gt=0, le=1, description="records/capacity that raises log_nearly_full")
    clock_drift_seconds: float = Field(60, gt=0, description="drift that raises clock_drift")
    offline_after_failures: int = Field(3, ge=1, description="failed contacts before a device is offline")
    silent_hours: float = Field(0, ge=0, description="hours without punches on a working day; 0 disables")
    broker_grace_seconds: float = Field(
        60, ge=0, description="how long the broker may be unreachable before /healthz answers 503"
    )
    clock_correct_max_seconds: float = Field(
        0, ge=0, description="correct drift only below this many seconds; 0 disables correction"
    )
    clock_correct_min_seconds: float = Field(
        30, ge=1, description="correct drift only above this many seconds (smaller drift is left alone)"
    )
    gateway_clock: Literal["check", "trust"] = Field(
        "check",
        description="check: correct terminal clocks only while the system reports its own clock "
        "synchronised (timedatectl, timesyncd, adjtimex); trust: skip that check",
    )
    work_days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        ["mon", "tue", "wed", "thu", "fri"], description="working days of the calendar used by silent"
    )
    work_start: dt.time = Field(dt.time(8, 0), description="start of the working day, terminal-local")
    work_end: dt.time = Field(
        dt.time(18, 0),
        description="end of the working day, terminal-local (00:00 means midnight; "
        "an end before the start is a night shift, e.g. 22:00 to 06:00)",
    )
    holidays: list[dt.date] = Field([], description="dates that are not working days")
    fault_hold_seconds: float = Field(
        600,
        ge=0,
        description="one-off faults (log_reset, device_replaced, protocol_error) stay active this long "
        "after they were last seen, so people get to see them",
    )
    max_pending_age_seconds: float = Field(
        3600, ge=0, description="oldest undelivered punch age that raises delivery_delayed; 0 disables"
    )

    @model_validator(mode="after")
    def _correction_bounds(self) -> HealthSettings:
        bounded = self.clock_correct_max_seconds
        if bounded and bounded <= self.clock_correct_min_seconds:
            raise ValueError("clock_correct_max_seconds must be above clock_correct_min_seconds (or 0)")
        return self

    @model_validator(mode="after")
    def _working_day_has_hours(self) -> HealthSettings:
        # The calendar reads an end before the start as a night shift and 00:00-00:00 as round the
        # clock, so the one window that cannot be meant is a day that ends when it starts.
        start, end = self.work_start, self.work_end
        if start == end and end != dt.time(0):
            raise config_problems(
                "HealthSettings",
                [
                    (
                        ("work_end",),
                        f"the working day ends when it starts ({end:%H:%M}): write the end of the day, "
                        "or work_start = 00:00:00 and work_end = 00:00:00 for round the clock",
                    )
                ],
            )
        return self


class PushSettings(StrictTyped):
    """The listener push terminals (`type = "zk-push"`) upload to; docs/zk-push.md."""

    enabled: bool | None = Field(
        None, description="serve push terminals; default: when a zk-push terminal is configured"
    )
    bind: str = Field(
        "127.0.0.1",
        description="address to listen on; the terminals must reach it, so set the gateway's LAN "
        "address (0.0.0.0: every interface)",
    )
    port: Port = Field(8081, description="port to listen on (the terminal's ADMS / cloud server port)")
    tls_cert_file: Path | None = Field(
        None, strict=False, description="certificate (PEM) to serve HTTPS with; needs tls_key_file"
    )
    tls_key_file: Path | None = Field(None, strict=False, description="private key (PEM) of tls_cert_file")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024, description="largest upload accepted (413 above)"
    )
    unknown_terminals: Literal["refuse", "quarantine"] = Field(
        "refuse",
        description="a serial number no terminal entry claims: refuse (HTTP 403, the terminal keeps its "
        "records) or quarantine (store them under a device named unknown-<serial>); either raises "
        "unknown_terminal",
    )
    missed_heartbeats: int = Field(
        3,
        ge=2,
        le=100,
        description="heartbeats (each `delay` s) a terminal may miss before it is unreachable",
    )

    @field_validator("bind")
    @classmethod
    def _bind_is_an_address(cls, value: str) -> str:
        return check_bind(value)

    @model_validator(mode="after")
    def _certificate_and_key(self) -> PushSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            raise config_problems(
                "PushSettings", [((missing,), "HTTPS needs both tls_cert_file and tls_key_file")]
            )
        return self


class TerminalHealth(StrictTyped):
    """The gateway's own keys on every `[[terminals]]` entry, beside the driver's."""

    health: HealthSettings | None = Field(None, description="per-terminal health thresholds")


def _with_gateway_keys(model: type[TerminalConfig]) -> type[TerminalConfig]:
    """The driver's terminal model plus the gateway's per-terminal keys, under the same name."""
    bases: tuple[type[Any], ...] = (model, TerminalHealth)
    composed = create_model(model.__name__, __base__=bases, __module__=model.__module__)
    return cast(type[TerminalConfig], composed)


# The `[[terminals]]` union, built from the drivers' descriptions: one entry per family.
TERMINAL_MODELS: dict[str, type[TerminalConfig]] = {
    d.type_name: _with_gateway_keys(d.config_model) for d in DRIVERS
}
if TYPE_CHECKING:
    Terminal = TerminalConfig
else:
    Terminal = Annotated[Union[tuple(TERMINAL_MODELS.values())], Field(discriminator="type")]  # noqa: UP007


def terminal_health_override(terminal: TerminalConfig) -> HealthSettings | None:
    override: HealthSettings | None = getattr(terminal, "health", None)
    return override


def _name_problems(terminals: Sequence[TerminalConfig]) -> list[tuple[Loc, str]]:
    """Names used twice, and names whose comm-key variables collide (gate-north, GATE_NORTH).

    Locations are within the terminals list: `(3, "name")`.
    """
    by_variable: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for i, terminal in enumerate(terminals):
        variable = comm_key_env_name(terminal.name)
        j = by_variable.setdefault(variable, i)
        if j == i:
            continue
        other = terminals[j].name
        if other == terminal.name:
            message = f"{other!r} is used twice (also terminals[{j}]): give every terminal its own name"
        else:
            message = (
                f"{terminal.name!r} and {other!r} (terminals[{j}]) differ only in case or in '-', '.', '_': "
                f"both would take their comm key from {variable}; rename one"
            )
        problems.append(((i, "name"), message))
    return problems


def _claim_problems(terminals: Sequence[TerminalConfig]) -> list[tuple[Loc, str]]:
    """Enabled terminals that occupy the same address, or one bus device id, or one line differently."""
    holders: dict[str, tuple[int, Claim]] = {}
    problems: list[tuple[Loc, str]] = []
    for i, terminal in enumerate(terminals):
        if not terminal.enabled:
            continue  # a disabled entry is never opened, so it takes nothing from the others
        for claim in terminal.claims():
            j, first = holders.setdefault(claim.key, (i, claim))
            if j == i or (claim.terms is not None and claim.terms == first.terms):
                continue
            other = f"terminal {terminals[j].name!r} (terminals[{j}])"
            if claim.terms is not None and first.terms is not None:
                message = f"{claim.label} is used by {other} with {first.terms}, here with {claim.terms}: {claim.fix}"
            else:
                message = f"{claim.label} is also {other}: {claim.fix}"
            problems.append(((i, claim.field), message))
    return problems


class Settings(StrictTyped):
    gateway_id: str = Field(pattern=NAME_PATTERN, description="this gateway's id, used in topics")
    site: str = Field("", description="human-readable site name")
    timezone: str = Field("UTC", description="default IANA timezone for terminals")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    shutdown_timeout: float = Field(10.0, gt=0, le=300, description="seconds to finish work on SIGTERM")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="broker connection")  # type: ignore[arg-type]
    buffer: BufferSettings = Field(default_factory=BufferSettings, description="durable buffer")  # type: ignore[arg-type]
    http: HttpSettings = Field(default_factory=HttpSettings, description="metrics and status endpoint")  # type: ignore[arg-type]
    health: HealthSettings = Field(default_factory=HealthSettings, description="default thresholds")  # type: ignore[arg-type]
    manual: ManualSettings = Field(default_factory=ManualSettings, description="make-up punches")  # type: ignore[arg-type]
    audit: AuditSettings = Field(default_factory=AuditSettings, description="the audit chain's head")  # type: ignore[arg-type]
    push: PushSettings = Field(default_factory=PushSettings, description="listener for push terminals")  # type: ignore[arg-type]
    commands: CommandsSettings = Field(default_factory=CommandsSettings, description="remote commands")  # type: ignore[arg-type]
    terminals: list[Terminal] = Field(default_factory=list, description="the terminals to read")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value) or value

    @field_validator("http")
    @classmethod
    def _bind_is_an_address(cls, value: HttpSettings) -> HttpSettings:
        try:
            check_bind(value.bind)
        except ValueError as exc:
            raise config_problems("HttpSettings", [(("bind",), str(exc))]) from None
        return value

    @field_validator("terminals")
    @classmethod
    def _terminals_apart(cls, value: list[TerminalConfig]) -> list[TerminalConfig]:
        # Field validators, not a model validator: these run even while other sections have
        # problems, so one check-config run reports them all.
        problems = _name_problems(value) + _claim_problems(value)
        if problems:
            raise config_problems("Settings", problems)
        return value

    def terminal_timezone(self, terminal: TerminalConfig) -> str:
        return terminal.timezone or self.timezone

    def terminal_health(self, terminal: TerminalConfig) -> HealthSettings:
        return terminal_health_override(terminal) or self.health


class ConfigError(Exception):
    """A config file that cannot be used. `problems` lists `key.path: message` lines."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


def _key_path(loc: tuple[int | str, ...]) -> str:
    """Turn pydantic's location into `terminals[2].port`, dropping union tag segments."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in TERMINAL_MODELS and out.endswith("]"):
            continue  # the discriminated union adds the tag as a path segment
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


# --- messages: what was wrong, and what to write instead -----------------------------------------


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _scalar(value: Any) -> str | None:
    """A short scalar as the file would show it; None for anything else (never repr a big value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) < 10**30:
        return str(value)
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, str) and len(value) <= 60:
        return value
    return None


def _parsed_number(value: Any) -> int | float | None:
    """The number a quoted value spells ("4370", " 1.5 ", "1_000"), if it spells a finite one."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip().replace("_", "")
    for kind in (int, float):
        try:
            number: int | float = kind(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else None
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model whose keys live at `loc` (pydantic's location, union tags included)."""
    choices: list[type[BaseModel]] = [Settings]
    for part in loc:
        if isinstance(part, int):
            continue
        if len(choices) > 1:  # a union: pydantic puts the tag it chose into the location
            choices = [m for m in choices if m is TERMINAL_MODELS.get(part)]
            continue
        field = choices[0].model_fields.get(part) if choices else None
        if field is None:
            return None
        choices = _models_in(field.annotation)
    return choices[0] if len(choices) == 1 else None


def _unknown_key(error: dict[str, Any]) -> str:
    loc = error["loc"]
    key = loc[-1] if loc else None
    model = _model_at(loc[:-1])
    if not isinstance(key, str) or model is None:
        return "unknown key"
    hints: dict[str, str] = getattr(model, "key_hints", {})
    if key.lower() in hints:
        return f"unknown key; {hints[key.lower()]}"
    names = list(model.model_fields)
    folded = {name.lower(): name for name in names}
    close = difflib.get_close_matches(key.lower().replace("-", "_"), names, n=1, cutoff=0.6)
    match = folded.get(key.lower().replace("-", "_")) or (close[0] if close else None)
    return f"unknown key; did you mean `{match}`?" if match else "unknown key"


def _not_an_int(error: dict[str, Any]) -> str:
    value = error.get("input")
    if isinstance(value, bool):
        return "must be a whole number, not true or false"
    if isinstance(value, float) and value.is_integer():
        return f"write it as a whole number: {int(value)}"
    number = _parsed_number(value)
    if isinstance(number, int):
        return f"write it as a number: {number}"
    return "must be a whole number"


def _not_a_float(error: dict[str, Any]) -> str:
    value = error.get("input")
    if isinstance(value, bool):
        return "must be a number, not true or false"
    if _parsed_number(value) is not None:
        return f"write it as a number: {str(value).strip()}"
    return "must be a number"


_TRUE = ("true", "yes", "on", "1", "y", "enabled")
_FALSE = ("false", "no", "off", "0", "n", "disabled")


def _not_a_bool(error: dict[str, Any]) -> str:
    value = error.get("input")
    if isinstance(value, int) and value in (0, 1):
        return f"write it as {'true' if value else 'false'}"
    spelled = value.strip().lower() if isinstance(value, str) else None
    if spelled in _TRUE or spelled in _FALSE:
        return f"write it as {'true' if spelled in _TRUE else 'false'}, without quotes"
    return "must be true or false, without quotes"


def _not_a_string(error: dict[str, Any]) -> str:
    shown = _scalar(error.get("input"))
    return f'write it as a string: "{shown}"' if shown is not None else 'must be a string, in quotes: "..."'


def _not_a_choice(error: dict[str, Any]) -> str:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    choices = re.findall(r"'([^']*)'", expected)
    value = error.get("input")
    shown = _scalar(value)
    if not isinstance(value, str) and shown in choices:
        return f'write it as a string: "{shown}"'
    if isinstance(value, str) and shown is not None:
        folded = {c.lower(): c for c in choices}
        close = difflib.get_close_matches(shown.lower(), list(folded), n=1, cutoff=0.6)
        match = folded.get(shown.strip().lower()) or (folded[close[0]] if close else None)
        if match:
            return f"must be {expected}; did you mean {match!r}?"
    return f"must be {expected}"


def _not_a_list(error: dict[str, Any]) -> str:
    if error["loc"] and error["loc"][-1] == "terminals":
        return "must be an array of tables: write each terminal under its own [[terminals]] (two brackets)"
    return "must be an array, in square brackets"


def _bounds(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("greater_than_equal", "less_than_equal") and "port" in str(error["loc"][-1]):
        return "must be 1..65535"
    symbol, key = {
        "greater_than_equal": (">=", "ge"),
        "less_than_equal": ("<=", "le"),
        "greater_than": (">", "gt"),
        "less_than": ("<", "lt"),
    }[kind]
    return f"must be {symbol} {_num(ctx.get(key))}"


def _tag_message(error: dict[str, Any]) -> str:
    expected = str((error.get("ctx") or {}).get("expected_tags"))
    entry = error.get("input")
    tag = entry.get("type") if isinstance(entry, dict) else None
    if not isinstance(tag, str):
        return f'`type` must be a string, in quotes: one of {expected} (e.g. type = "zk")'
    shown = _scalar(tag) or tag[:57] + "..."
    close = difflib.get_close_matches(tag.lower(), list(TERMINAL_MODELS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown terminal type {shown!r} (expected one of: {expected}){hint}"


_MESSAGES: dict[str, Any] = {
    "extra_forbidden": _unknown_key,
    "missing": lambda e: "required",
    "greater_than_equal": _bounds,
    "less_than_equal": _bounds,
    "greater_than": _bounds,
    "less_than": _bounds,
    "union_tag_invalid": _tag_message,
    "union_tag_not_found": lambda e: "missing 'type' (e.g. type = \"zk\")",
    "string_pattern_mismatch": lambda e: (
        "must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit"
    ),
    "value_error": lambda e: str((e.get("ctx") or {}).get("error", e["msg"])),
    "int_type": _not_an_int,
    "int_parsing": _not_an_int,
    "int_from_float": _not_an_int,
    "float_type": _not_a_float,
    "float_parsing": _not_a_float,
    "finite_number": lambda e: "must be a finite number (not nan or inf)",
    "bool_type": _not_a_bool,
    "bool_parsing": _not_a_bool,
    "string_type": _not_a_string,
    "literal_error": _not_a_choice,
    "list_type": _not_a_list,
    "time_type": lambda e: "write it as a time without quotes, e.g. 08:00:00",
    "date_type": lambda e: "write it as a date without quotes, e.g. 2024-12-25",
    "model_type": lambda e: "must be a table: a [section], or { key = value } inline",
    "model_attributes_type": lambda e: "must be a table: a [section], or { key = value } inline",
    "dict_type": lambda e: "must be a table: a [section], or { key = value } inline",
    "string_too_short": lambda e: "must not be empty",
    "path_type": lambda e: 'must be a file path, in quotes: "/etc/punchgate/…"',
}


def _message(error: Any) -> str:
    handler = _MESSAGES.get(error["type"])
    return str(handler(error)) if handler else str(error["msg"]).lower()


# --- reading ------------------------------------------------------------------------------------


def settings_from_dict(data: dict[str, Any], *, source: str = "<config>") -> Settings:
    """Validate an already parsed config; raises ConfigError listing every bad key."""
    try:
        return Settings.model_validate(apply_secrets(data))
    except ValidationError as exc:
        problems = [f"{_key_path(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise ConfigError(source, problems) from None
    except SecretError as exc:
        raise ConfigError(source, [f"{exc.key}: {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, [NESTED_TOO_DEEPLY]) from None


def _toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    text = str(exc)
    where = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", text, re.DOTALL)
    if where:
        what, place = where[1], f"at line {where[2]}, column {where[3]}"
    else:
        what, place = text.removesuffix(" (at end of document)"), "at the end of the file"
    hint = ""
    if what.startswith("Invalid value"):
        hint = ' (strings need quotes, host = "192.0.2.10"; numbers and true/false do not)'
    elif what.startswith("Expected newline"):
        hint = ' (a string missing its quotes? host = "10.0.0.5", not host = 10.0.0.5)'
    elif what == "Illegal character '\\n'":
        hint = " (a string left open: close its quotes on the same line)"
    elif "twice" in what or "overwrite" in what:
        hint = " (a key or table is written twice; each terminal goes under its own [[terminals]])"
    return f"(file): not valid TOML {place}: {what[:1].lower()}{what[1:]}{hint}"


def _utf8_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    line_start = raw.rfind(b"\n", 0, exc.start) + 1
    line = raw.count(b"\n", 0, exc.start) + 1
    column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
    return (
        f"(file): not UTF-8 text at line {line}, column {column} (byte 0x{raw[exc.start]:02x}): "
        "save the file as UTF-8"
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ConfigError(path, ["(file): not a regular file: give the path of the TOML config file"])
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(path, [f"(file): cannot read: {reason}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            path, ["(file): larger than 1 MB: a punchgate config is a few KB; is this the right file?"]
        )
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte order mark, as some Windows editors save
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [_utf8_problem(raw, exc)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [_toml_problem(exc)]) from None
    except RecursionError:
        raise ConfigError(path, [NESTED_TOO_DEEPLY]) from None


def _unreadable(path: Path) -> str | None:
    """Why the service could not read the file at `path`, or None if it can."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        where = (
            "" if path.is_absolute() else " (a relative path counts from the directory punchgate starts in)"
        )
        return f"{path} does not exist: check the path{where}"
    except (OSError, ValueError) as exc:
        return f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc}"
    if stat.S_ISDIR(mode):
        return f"{path} is a directory: name the file inside it"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    try:
        with path.open("rb") as handle:
            empty = not handle.read(1)
    except PermissionError:
        return (
            f"cannot read {path}: permission denied for uid {os.geteuid()}: "
            "give the user punchgate runs as read access"
        )
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return f"{path} is empty" if empty else None


def _file_problems(settings: Settings) -> list[str]:
    """Files the settings name that this machine must have: the TLS certificate and keys."""
    problems = [  # the push listener's HTTPS files
        f"push.{key}: {problem}"
        for key in ("tls_cert_file", "tls_key_file")
        if (file := getattr(settings.push, key)) is not None and (problem := _unreadable(file))
    ]
    tls = settings.mqtt.tls
    if tls is None:
        return problems
    for key in ("ca_file", "cert_file", "key_file"):
        path: Path | None = getattr(tls, key)
        problem = _unreadable(path) if path is not None else None
        if problem:
            problems.append(f"mqtt.tls.{key}: {problem}")
    return problems


def load_settings(path: Path | str, *, require_terminals: bool = False, check_files: bool = True) -> Settings:
    """Read and validate a config file; raises ConfigError naming every bad key.

    Beyond the model, checks what the file names on this machine: the TLS files must be
    readable by this user (`check_files=False` skips that, for commands that only need the
    HTTP address, run by someone other than the service user). With `require_terminals`, a
    file without `[[terminals]]` is an error too (for check-config; a gateway may run without
    terminals to drain its buffer).
    """
    path = Path(path)
    data = _read_toml(path)
    missing = [NO_TERMINALS] if require_terminals and not data.get("terminals") else []
    try:
        settings = settings_from_dict(data, source=str(path))
    except ConfigError as exc:
        raise ConfigError(path, exc.problems + missing) from None
    problems = missing + (_file_problems(settings) if check_files else [])
    if problems:
        raise ConfigError(path, problems)
    return settings
