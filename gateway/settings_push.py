"""`[push]`: the listener push terminals upload to."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from punchgate.drivers.config import Port, StrictTyped, config_problems
from punchgate.gateway.settings_hosts import check_bind


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
