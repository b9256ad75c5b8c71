"""What every terminal's config entry shares, and the strict model base the drivers build on.

Each driver package owns the model of its own `[[terminals]]` entry (a subclass of
`TerminalConfig` with a literal `type`); `punchgate.gateway.settings` only composes them into
the config file's discriminated union. Unknown keys are rejected everywhere: a typo must never
be silently ignored on a site whose payroll depends on this file.
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Port = Annotated[int, Field(ge=1, le=65535)]


def check_timezone(value: str | None) -> str | None:
    """The value if it names an IANA zone this machine knows; ValueError saying so otherwise."""
    if value is None:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r}") from None
    return value


class Strict(BaseModel):
    """Frozen, unknown keys forbidden, defaults validated too."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class TerminalConfig(Strict):
    """Keys every terminal type has. Drivers subclass it and add `type` and their own keys."""

    type: str
    name: str = Field(pattern=NAME_PATTERN, description="unique terminal name, used in topics and logs")
    timezone: str | None = Field(None, description="IANA timezone of the terminal's clock; default: site's")
    poll_interval: float = Field(60.0, ge=1, le=86400, description="seconds between full reads")
    enabled: bool = Field(True, description="set false to keep a terminal in the file but not read it")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return check_timezone(value)
