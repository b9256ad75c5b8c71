"""`[http]`: the API, /metrics and the console's listener, and how it is served (loopback, HTTPS)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from punchgate.drivers.config import Port, Strict, config_problems
from punchgate.gateway.settings_hosts import check_bind, is_loopback_bind


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
