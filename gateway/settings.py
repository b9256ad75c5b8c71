"""The configuration file's schema: one TOML file, composed from the components' own models.

Each component owns its settings: every driver its `[[terminals]]` entry (see
`punchgate.drivers.registry`), the buffer and the forwarder theirs (`punchgate.sync.settings`).
This module composes the whole from the gateway's own sections (`settings_http`,
`settings_health`, `settings_push`, the `[[terminals]]` union in `settings_terminals`). Unknown
keys are rejected everywhere (a typo must never be silently ignored on a site that depends on
this config for payroll). Secrets may stay out of the file: see `punchgate.gateway.secrets`.

What a bad file gets is a `ConfigError` listing `key.path: message` lines, each saying what to
write instead; never a traceback. Checks that span keys (two terminals on one address, names
whose comm-key variables collide) live in `Settings`' validators (`settings_collisions`, `settings_hosts`); checks that look at this
machine's files (the TLS files) run only when a file is loaded (`load_settings`), because a
model may describe another machine (`settings_file`). The messages are `settings_keys` and
`settings_messages`; the error is `settings_errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from punchgate.drivers.config import (
    NAME_PATTERN,
    StrictTyped,
    TerminalConfig,
    check_timezone,
    config_problems,
)
from punchgate.gateway.commands.settings import CommandsSettings
from punchgate.gateway.roster import RosterSettings
from punchgate.gateway.secrets import SecretError, apply_secrets
from punchgate.gateway.settings_collisions import Loc, claim_problems, name_problems
from punchgate.gateway.settings_errors import NESTED_TOO_DEEPLY, NO_TERMINALS, ConfigError
from punchgate.gateway.settings_file import MAX_CONFIG_BYTES, file_problems, read_toml
from punchgate.gateway.settings_health import HealthSettings
from punchgate.gateway.settings_hosts import check_bind, is_loopback_bind
from punchgate.gateway.settings_http import HttpSettings
from punchgate.gateway.settings_keys import key_path
from punchgate.gateway.settings_messages import message
from punchgate.gateway.settings_push import PushSettings
from punchgate.gateway.settings_terminals import (
    TERMINAL_MODELS,
    Terminal,
    TerminalHealth,
    terminal_health_override,
)
from punchgate.sync.audit import AuditSettings
from punchgate.sync.manual import ManualSettings
from punchgate.sync.settings import BufferSettings, MqttSettings

__all__ = [
    "MAX_CONFIG_BYTES",
    "NESTED_TOO_DEEPLY",
    "NO_TERMINALS",
    "TERMINAL_MODELS",
    "ConfigError",
    "HealthSettings",
    "HttpSettings",
    "Loc",
    "PushSettings",
    "Settings",
    "Terminal",
    "TerminalHealth",
    "check_bind",
    "is_loopback_bind",
    "load_settings",
    "settings_from_dict",
    "terminal_health_override",
]


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
    roster: RosterSettings = Field(default_factory=RosterSettings, description="enrolled users")  # type: ignore[arg-type]
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
        problems = name_problems(value) + claim_problems(value)
        if problems:
            raise config_problems("Settings", problems)
        return value

    def terminal_timezone(self, terminal: TerminalConfig) -> str:
        return terminal.timezone or self.timezone

    def terminal_health(self, terminal: TerminalConfig) -> HealthSettings:
        return terminal_health_override(terminal) or self.health


def settings_from_dict(data: dict[str, Any], *, source: str = "<config>") -> Settings:
    """Validate an already parsed config; raises ConfigError listing every bad key."""
    try:
        return Settings.model_validate(apply_secrets(data))
    except ValidationError as exc:
        problems = [f"{key_path(e['loc'])}: {message(e, Settings)}" for e in exc.errors()]
        raise ConfigError(source, problems) from None
    except SecretError as exc:
        raise ConfigError(source, [f"{exc.key}: {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, [NESTED_TOO_DEEPLY]) from None


def load_settings(path: Path | str, *, require_terminals: bool = False, check_files: bool = True) -> Settings:
    """Read and validate a config file; raises ConfigError naming every bad key.

    Beyond the model, checks what the file names on this machine: the TLS files must be
    readable by this user (`check_files=False` skips that, for commands that only need the
    HTTP address, run by someone other than the service user). With `require_terminals`, a
    file without `[[terminals]]` is an error too (for check-config; a gateway may run without
    terminals to drain its buffer).
    """
    path = Path(path)
    data = read_toml(path)
    missing = [NO_TERMINALS] if require_terminals and not data.get("terminals") else []
    try:
        settings = settings_from_dict(data, source=str(path))
    except ConfigError as exc:
        raise ConfigError(path, exc.problems + missing) from None
    problems = missing + (file_problems(settings) if check_files else [])
    if problems:
        raise ConfigError(path, problems)
    return settings
