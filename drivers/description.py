"""How a driver package describes itself, so that adding a terminal family is one new folder.

Each driver package's `__init__` exports one `DESCRIPTION`; `punchgate.drivers.registry`
lists them, and the gateway builds from that list the config file's `[[terminals]]` union,
the driver factory, the CLI's `probe`/`emulate` sub-commands and the state/verify names of
normalised punches. The description is cheap to import: the driver, probe and emulator
modules load only when used.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import click
import structlog

from punchgate.drivers.base import Driver
from punchgate.drivers.config import TerminalConfig


@dataclass(frozen=True, slots=True)
class LoggingHook:
    """Handed to a driver's command as click's `obj` by the punchgate CLI, so the command logs
    the way the gateway does without the driver importing the gateway."""

    configure: Callable[[str], None]


def configure_command_logging(level: str) -> None:
    """Set up logging for a driver command: the gateway's way when run from `punchgate`,
    structlog's plain console output at `level` when run alone (`python -m …`)."""
    context = click.get_current_context(silent=True)
    hook = context.find_object(LoggingHook) if context is not None else None
    if hook is not None:
        hook.configure(level)
        return
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()])
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverDescription:
    type_name: str  # the config's `type` and the probe URL scheme (zk://, anviz://)
    summary: str
    config_model: type[TerminalConfig]
    create: Callable[[Any], Driver]  # config entry -> driver; imports the driver module lazily
    state_names: Mapping[int, str]  # the terminal's state (punch) codes -> contract names
    verify_names: Mapping[int, str]  # the terminal's verify-type codes -> contract names
    probe_command: str | None = None  # "module:attribute" of a click command, or None
    emulate_command: str | None = None

    def load_command(self, which: str) -> click.Command | None:
        """The probe or emulate click command, imported on first use; None if it has none."""
        target = self.probe_command if which == "probe" else self.emulate_command
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command
