"""ZKTeco terminals that push their records over HTTP (ADMS / iclock push protocol).

Unlike the other families, nothing here is polled: the gateway serves the receiver
(`receiver.py`) on its `[push]` listener, and the terminals come to it. The description
still gives the config model and the names; its `create` refuses, because no device worker
is ever built for a push terminal.
"""

from __future__ import annotations

from typing import NoReturn

from punchgate.drivers.base import UnsupportedDeviceError
from punchgate.drivers.description import DriverDescription
from punchgate.drivers.zk_push.config import ZkPushTerminal
from punchgate.drivers.zk_push.names import STATE_NAMES, VERIFY_NAMES

TYPE_NAME = "zk-push"


def _create(config: ZkPushTerminal) -> NoReturn:
    raise UnsupportedDeviceError(
        "a zk-push terminal is not polled: it pushes to the gateway's [push] listener", device=config.name
    )


def is_push_terminal(config: object) -> bool:
    """True for a `[[terminals]]` entry served by the push receiver rather than a device worker."""
    return isinstance(config, ZkPushTerminal)


DESCRIPTION = DriverDescription(
    type_name=TYPE_NAME,
    summary="ZKTeco-style terminal pushing its records over HTTP (ADMS / iclock)",
    config_model=ZkPushTerminal,
    create=_create,
    state_names=STATE_NAMES,
    verify_names=VERIFY_NAMES,
    emulate_command="punchgate.drivers.zk_push.cli:emulate_command",
)
