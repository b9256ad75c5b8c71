"""The configuration file's schema: strict pydantic models, one TOML file.

Unknown keys are rejected everywhere (a typo must never be silently ignored on a site that
depends on this config for payroll). Secrets may stay out of the file: see `gateway.secrets`.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Port = Annotated[int, Field(ge=1, le=65535)]


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r}") from None
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class TlsSettings(Strict):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate for mutual TLS")
    key_file: Path | None = Field(None, description="private key of the client certificate")
    insecure: bool = Field(False, description="skip hostname verification (testing only)")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttSettings(Strict):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: Port = Field(1883, description="broker port")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version")
    client_id: str | None = Field(None, description="MQTT client id; defaults to punchgate-{gateway_id}")
    topic_prefix: str = Field("punchgate", description="first level of every topic")
    username: str | None = Field(None, description="broker user name")
    password: SecretStr | None = Field(
        None, description="broker password; prefer PUNCHGATE_MQTT_PASSWORD or a systemd credential"
    )
    tls: TlsSettings | None = Field(None, description="TLS settings; absent means plain TCP")
    keepalive: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds")
    batch_size: int = Field(500, ge=1, le=10000, description="punches per backlog message")
    publish_timeout: float = Field(10.0, gt=0, description="seconds to wait for a PUBACK")
    reconnect_min: float = Field(1.0, gt=0, description="first reconnect delay in seconds")
    reconnect_max: float = Field(60.0, gt=0, description="longest reconnect delay in seconds")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str) -> str:
        if not value or any(c in value for c in "#+\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError("must be a non-empty topic without wildcards or leading/trailing '/'")
        return value


class BufferSettings(Strict):
    path: Path = Field(Path("/var/lib/punchgate/buffer.db"), description="SQLite buffer file")
    max_pending: int = Field(5_000_000, ge=1, description="undelivered punches before buffer_full")
    min_free_disk_mb: int = Field(200, ge=0, description="free disk below which new punches are refused")
    retention_days: int = Field(90, ge=0, description="days delivered punches are kept for replay")


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


class TerminalBase(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="unique terminal name, used in topics and logs")
    timezone: str | None = Field(None, description="IANA timezone of the terminal's clock; default: site's")
    poll_interval: float = Field(60.0, ge=1, le=86400, description="seconds between full reads")
    enabled: bool = Field(True, description="set false to keep a terminal in the file but not read it")
    health: HealthSettings | None = Field(None, description="per-terminal health thresholds")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return _check_timezone(value)


class ZkTerminal(TerminalBase):
    type: Literal["zk"] = Field(description="ZKTeco-style terminal, ZK protocol")
    host: str = Field(min_length=1, description="terminal address")
    port: Port = Field(4370, description="terminal port")
    transport: Literal["tcp", "udp"] = Field("tcp", description="tcp for TFT firmware, udp for BW firmware")
    comm_key: SecretStr | None = Field(None, description="numeric comm key (password); 0 or absent: none")
    live: bool = Field(True, description="listen for real-time punches between polls")
    encoding: str = Field("utf-8", description="text encoding of user names (e.g. gbk)")
    timeout: float = Field(10.0, gt=0, le=300, description="base socket timeout in seconds")
    clear_log: bool = Field(False, description="clear the terminal's log after a verified durable read")

    @field_validator("comm_key")
    @classmethod
    def _numeric_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"\d{1,10}", value.get_secret_value()):
            raise ValueError("must be a number (0..4294967295)")
        if value is not None and int(value.get_secret_value()) > 0xFFFFFFFF:
            raise ValueError("must be a number (0..4294967295)")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value


class AnvizTerminal(TerminalBase):
    type: Literal["anviz"] = Field(description="Anviz TC_B terminal over RS232/RS485 or TCP")
    endpoint: str = Field(
        description="serial:///dev/ttyUSB0?baud=9600&parity=N (RS232/RS485) or tcp://host:5010; see docs/anviz.md"
    )
    device_id: int = Field(
        1, ge=1, le=0xFFFFFFFF, description="the terminal's communication device id (its address on the bus)"
    )
    live: bool = Field(True, description="listen for real-time punches between polls (TCP endpoints only)")
    timeout: float = Field(2.0, gt=0, le=300, description="seconds to wait for each reply")
    retries: int = Field(2, ge=0, le=10, description="resends after a lost or corrupted reply")
    epoch: Literal["2000-01-02", "2000-01-01"] = Field(
        "2000-01-02", description="day the record clock counts from (most firmware: 2000-01-02)"
    )
    mark_read: bool = Field(
        True,
        description="clear the terminal's new-record flags after a durable commit (records stay in its log)",
    )

    @field_validator("endpoint")
    @classmethod
    def _valid_endpoint(cls, value: str) -> str:
        from punchgate.drivers.anviz.endpoint import parse_endpoint

        parse_endpoint(value)  # raises ValueError saying what is wrong
        return value.strip()

    @property
    def clear_log(self) -> bool:
        """What the worker asks: Anviz reads only new records, so marking them read is the clear."""
        return self.mark_read


Terminal = Annotated[ZkTerminal | AnvizTerminal, Field(discriminator="type")]


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
        return _check_timezone(value) or value

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for terminal in self.terminals:
            if terminal.name in seen:
                raise ValueError(f"terminal name {terminal.name!r} is used twice")
            seen.add(terminal.name)
        return self

    def terminal_timezone(self, terminal: TerminalBase) -> str:
        return terminal.timezone or self.timezone

    def terminal_health(self, terminal: TerminalBase) -> HealthSettings:
        return terminal.health or self.health


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
        elif part in ("zk", "anviz") and out.endswith("]"):
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
