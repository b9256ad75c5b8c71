"""The settings the buffer and the forwarder own: the `[buffer]` and `[mqtt]` config sections.

`punchgate.gateway.settings` composes them into the config file. Strict like every section:
unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    # The same base as punchgate.drivers.config.Strict; sync does not import drivers.
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
