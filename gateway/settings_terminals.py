"""The `[[terminals]]` union: every driver's entry model plus the gateway's per-terminal keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union, cast

from pydantic import Field, create_model

from punchgate.drivers.config import StrictTyped, TerminalConfig
from punchgate.drivers.registry import DRIVERS
from punchgate.gateway.settings_health import HealthSettings


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
