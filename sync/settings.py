"""The settings the buffer and the forwarder own: the `[buffer]` and `[mqtt]` config sections.

`punchgate.gateway.settings` composes them into the config file. Strict like every section:
unknown keys are errors, never silently ignored, and values are strictly typed. Whether the
TLS files exist is checked when the file is loaded (`load_settings`), not here: a model may
well be built for a machine other than this one.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from collections.abc import Sequence
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
from pydantic_core import InitErrorDetails, PydanticCustomError

Port = Annotated[int, Field(ge=1, le=65535)]

_BUFFER_EXAMPLE = "/var/lib/punchgate/buffer.db"
# Where a buffer file can never live: kernel file systems and device nodes.
_NOT_A_DISK = (Path("/dev"), Path("/proc"), Path("/sys"))


class Strict(BaseModel):
    # The same base as punchgate.drivers.config.Strict; sync does not import drivers.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False
    )


def _problems(title: str, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    # The twin of punchgate.drivers.config.config_problems: each message at its own key.
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{error}", {"error": message}), loc=loc, input=None
            )
            for loc, message in problems
        ],
    )


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_host(value: str, *, port_key: str = "port") -> str:
    """The twin of punchgate.drivers.config.check_host (sync does not import drivers).

    tests/gateway/test_config_hosts.py holds both to one table; change them together.
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


class TlsSettings(Strict):
    ca_file: Path | None = Field(
        None, strict=False, description="CA bundle that signed the broker's certificate; absent: the system's"
    )
    cert_file: Path | None = Field(None, strict=False, description="client certificate for mutual TLS")
    key_file: Path | None = Field(None, strict=False, description="private key of the client certificate")
    insecure: bool = Field(False, description="skip hostname verification (testing only)")

    @field_validator("ca_file", "cert_file", "key_file", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty: write the file's path, or remove the key")
        return value

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttSettings(Strict):
    host: str = Field("127.0.0.1", description="broker host name or address (IPv4, IPv6 or host name)")
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
    publish_timeout: float = Field(10.0, gt=0, le=3600, description="seconds to wait for a PUBACK")
    reconnect_min: float = Field(1.0, gt=0, le=3600, description="first reconnect delay in seconds")
    reconnect_max: float = Field(
        60.0, gt=0, le=3600, description="longest reconnect delay in seconds (>= reconnect_min)"
    )
    # Delivery mode (docs/mqtt-contract.md, "Confirmations"): what makes a punch delivered.
    delivery: Literal["broker", "central"] = Field(
        "broker",
        description="when a punch counts as delivered: broker (the broker's PUBACK) or central (a "
        "consumer's confirmation on {base}/confirm that it stored the punch)",
    )
    resend_after: float = Field(
        120.0,
        ge=1,
        le=86400,
        description="central: seconds a published punch waits for its confirmation before it is sent again",
    )
    max_unconfirmed_age: float = Field(
        900.0,
        ge=0,
        le=30 * 86400,
        description="central: age (s) of the oldest unconfirmed punch that raises confirmation_delayed; 0 disables",
    )
    # 300 s, not 60: a digest is recomputed from the buffer (every id of the terminal's changed
    # days), and at 5,000 terminals punching at a shift change's rate one a minute each was
    # 83 messages a second, a tenth of a core; a gap found five minutes later is still found.
    digest_interval: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="shortest time (s) between two reconciliation digests of one terminal; 0: no digests",
    )

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str) -> str:
        if not value or any(c in value for c in "#+\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError("must be a non-empty topic without wildcards or leading/trailing '/'")
        return value

    @model_validator(mode="after")
    def _backoff_grows(self) -> MqttSettings:
        if self.reconnect_max < self.reconnect_min:
            raise _problems(
                "MqttSettings",
                [
                    (
                        ("reconnect_max",),
                        f"is {self.reconnect_max:g}, below reconnect_min ({self.reconnect_min:g}): "
                        "raise reconnect_max or lower reconnect_min",
                    )
                ],
            )
        return self


def _buffer_path_problem(path: Path) -> str | None:
    """What is wrong with `path` as the buffer's SQLite file, or None."""
    text = str(path)
    shown = text if len(text) <= 100 else text[:97] + "..."
    if len(text) > 4096:
        return f"is {len(text)} characters long: write a path such as {_BUFFER_EXAMPLE}"
    if not path.is_absolute():
        return (
            f"{shown!r} is relative: write an absolute path, e.g. {_BUFFER_EXAMPLE} "
            "(a relative one depends on the directory the service starts in)"
        )
    if ".." in path.parts:
        return f"{shown!r} contains '..': write the directory it really is, e.g. {_BUFFER_EXAMPLE}"
    if any(path == root or root in path.parents for root in _NOT_A_DISK):
        return (
            f"{path} is a device or kernel file, not a file on a disk: write a path such as {_BUFFER_EXAMPLE}"
        )
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None  # not there yet (the store creates it) or not ours to look at
    if stat.S_ISDIR(mode):
        return f"{path} is a directory: name the file inside it, e.g. {path / 'buffer.db'}"
    if not stat.S_ISREG(mode):
        return f"{path} is a device or special file: write a regular file path such as {_BUFFER_EXAMPLE}"
    return None


class BufferSettings(Strict):
    path: Path = Field(
        Path(_BUFFER_EXAMPLE), strict=False, description="SQLite buffer file (an absolute path to a file)"
    )
    max_pending: int = Field(
        5_000_000, ge=1, le=1_000_000_000, description="undelivered punches before buffer_full"
    )
    min_free_disk_mb: int = Field(
        200,
        ge=0,
        le=10_000_000,
        description="free disk (MB, at most 10 TB) below which new punches are refused",
    )
    retention_days: int = Field(
        90, ge=0, le=3650, description="days delivered punches are kept for replay (at most 10 years)"
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path_as_written(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            raise ValueError(f"must not be empty: write an absolute file path, e.g. {_BUFFER_EXAMPLE}")
        if value.strip() == ":memory:" or value.startswith("file:"):
            raise ValueError(
                f"{value!r} is not a file: an in-memory or URI database would lose buffered punches; "
                f"write an absolute file path, e.g. {_BUFFER_EXAMPLE}"
            )
        if value.endswith("/"):
            raise ValueError(f"{value!r} is a directory: name the file inside it, e.g. {value}buffer.db")
        if "\0" in value:
            raise ValueError("contains a NUL character")
        return value

    @field_validator("path")
    @classmethod
    def _usable_path(cls, value: Path) -> Path:
        problem = _buffer_path_problem(value)
        if problem:
            raise ValueError(problem)
        return value
