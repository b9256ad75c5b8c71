"""Anviz TC_B terminals over RS232/RS485 (pyserial) and TCP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from punchgate.drivers.anviz.config import AnvizTerminal
from punchgate.drivers.anviz.names import STATE_NAMES, VERIFY_NAMES
from punchgate.drivers.description import DriverDescription

if TYPE_CHECKING:
    from punchgate.drivers.anviz.driver import AnvizDriver


def _create(config: AnvizTerminal) -> AnvizDriver:
    from punchgate.drivers.anviz.driver import AnvizDriver

    return AnvizDriver.from_config(config)


DESCRIPTION = DriverDescription(
    type_name="anviz",
    summary="Anviz TC_B terminal over RS232/RS485 or TCP",
    config_model=AnvizTerminal,
    create=_create,
    state_names=STATE_NAMES,
    verify_names=VERIFY_NAMES,
    probe_command="punchgate.drivers.anviz.cli:probe_command",
    emulate_command="punchgate.drivers.anviz.cli:emulate_command",
)
