"""ZKTeco-style terminals polled over TCP/UDP (the ZK protocol, port 4370, through pyzk)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from punchgate.drivers.description import DriverDescription
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.names import STATE_NAMES, VERIFY_NAMES

if TYPE_CHECKING:
    from punchgate.drivers.zk.driver import ZkDriver


def _create(config: ZkTerminal) -> ZkDriver:
    from punchgate.drivers.zk.driver import ZkDriver  # pyzk loads only when a terminal needs it

    return ZkDriver(config)


DESCRIPTION = DriverDescription(
    type_name="zk",
    summary="ZKTeco-style terminal, ZK protocol over TCP or UDP",
    config_model=ZkTerminal,
    create=_create,
    state_names=STATE_NAMES,
    verify_names=VERIFY_NAMES,
    probe_command="punchgate.drivers.zk.probe:probe_command",
    emulate_command="punchgate.drivers.zk.cli:emulate_command",
)
