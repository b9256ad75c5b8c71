"""`[commands]`: which remote commands this gateway accepts over MQTT, and their limits."""

from __future__ import annotations

from pydantic import Field, model_validator

from punchgate.drivers.config import StrictTyped, config_problems
from punchgate.gateway.commands.catalogue import DEFAULT_ALLOW, DESTRUCTIVE
from punchgate.sync.command_contract import CommandName


class CommandsSettings(StrictTyped):
    """`[commands]`: remote commands over MQTT (docs/mqtt-contract.md, "Remote commands")."""

    enabled: bool = Field(
        True, description="subscribe to {base}/commands/request and answer the commands allowed below"
    )
    allow: list[CommandName] = Field(
        list(DEFAULT_ALLOW),  # type: ignore[arg-type]  # the catalogue's names are CommandName values
        description="the commands accepted; default: the reads and punches.resend. Anything that "
        "changes a terminal must be named here, the destructive ones ("
        + ", ".join(DESTRUCTIVE)
        + ") included",
    )
    default_ttl_seconds: float = Field(
        3600,
        gt=0,
        le=30 * 86400,
        description="how long a request without expires_at waits for an offline terminal",
    )
    max_ttl_seconds: float = Field(
        7 * 86400, gt=0, le=365 * 86400, description="the latest expires_at accepted, from now"
    )
    max_request_bytes: int = Field(
        65536, ge=1024, le=4 * 1024 * 1024, description="bigger requests are refused (too_large)"
    )
    remember_days: float = Field(
        30,
        ge=1,
        le=3650,
        description="days a finished request is remembered: a repeated id within them is answered "
        "from memory, never run again",
    )
    set_time_max_offset_seconds: float = Field(
        300,
        ge=0,
        le=86400,
        description="device.set_time: how far from the gateway's clock the time set may be",
    )

    @model_validator(mode="after")
    def _ttl_order(self) -> CommandsSettings:
        if self.default_ttl_seconds > self.max_ttl_seconds:
            raise config_problems(
                "CommandsSettings",
                [(("default_ttl_seconds",), f"must not exceed max_ttl_seconds ({self.max_ttl_seconds:g})")],
            )
        return self
