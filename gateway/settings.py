"""The configuration file's schema: one TOML file, composed from the components' own models.

Each component owns its settings: every driver its `[[terminals]]` entry (see
`punchgate.drivers.registry`), the buffer and the forwarder theirs (`punchgate.sync.settings`).
This module adds the gateway's own sections (http, health) and composes the whole. Unknown
keys are rejected everywhere (a typo must never be silently ignored on a site that depends on
this config for payroll). Secrets may stay out of the file: see `punchgate.gateway.secrets`.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from punchgate.drivers.config import NAME_PATTERN, Port, Strict, TerminalConfig, check_timezone
from punchgate.drivers.registry import DRIVERS
from punchgate.sync.settings import BufferSettings, MqttSettings


class HttpSettings(Strict):
    enabled: bool = Field(True, description="serve /metrics, /healthz and /api")
    bind: str = Field("127.0.0.1", description="address to listen on (loopback by default)")
    port: Port = Field(9108, description="port to listen on")


class HealthSettings(Strict):
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
        dt.time(18, 0), description="end of the working day, terminal-local (00:00 means midnight)"
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


class TerminalHealth(Strict):
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


class Settings(Strict):
    gateway_id: str = Field(pattern=NAME_PATTERN, description="this gateway's id, used in topics")
    site: str = Field("", description="human-readable site name")
    timezone: str = Field("UTC", description="default IANA timezone for terminals")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    shutdown_timeout: float = Field(10.0, gt=0, le=300, description="seconds to finish work on SIGTERM")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="broker connection")  # type: ignore[arg-type]
    buffer: BufferSettings = Field(default_factory=BufferSettings, description="durable buffer")  # type: ignore[arg-type]
    http: HttpSettings = Field(default_factory=HttpSettings, description="metrics and status endpoint")  # type: ignore[arg-type]
    health: HealthSettings = Field(default_factory=HealthSettings, description="default thresholds")  # type: ignore[arg-type]
    terminals: list[Terminal] = Field(default_factory=list, description="the terminals to read")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value) or value

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for terminal in self.terminals:
            if terminal.name in seen:
                raise ValueError(f"terminal name {terminal.name!r} is used twice")
            seen.add(terminal.name)
        return self

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


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("greater_than_equal", "less_than_equal") and "port" in str(error["loc"][-1]):
        return "must be 1..65535"
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx.get('ge'))}"
    if kind == "less_than_equal":
        return f"must be <= {_num(ctx.get('le'))}"
    if kind == "greater_than":
        return f"must be > {_num(ctx.get('gt'))}"
    if kind == "union_tag_invalid":
        return f"unknown terminal type {ctx.get('tag')!r} (expected one of: {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return "missing 'type' (e.g. type = \"zk\")"
    if kind == "string_pattern_mismatch":
        return "must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"]).lower()


def settings_from_dict(data: dict[str, Any], *, source: str = "<config>") -> Settings:
    from punchgate.gateway.secrets import apply_secrets

    data = apply_secrets(data)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_key_path(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise ConfigError(source, problems) from None


def load_settings(path: Path | str) -> Settings:
    """Read and validate a config file; raises ConfigError naming every bad key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, [f"(file): cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, ["(file): not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"(file): not valid TOML: {exc}"]) from None
    return settings_from_dict(data, source=str(path))
