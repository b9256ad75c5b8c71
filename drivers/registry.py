"""Every terminal family punchgate knows: adding one is a new driver folder and one line here."""

from __future__ import annotations

from punchgate.drivers import anviz, zk, zk_push
from punchgate.drivers.base import Driver
from punchgate.drivers.config import TerminalConfig
from punchgate.drivers.description import DriverDescription

DRIVERS: tuple[DriverDescription, ...] = (zk.DESCRIPTION, anviz.DESCRIPTION, zk_push.DESCRIPTION)
BY_TYPE: dict[str, DriverDescription] = {d.type_name: d for d in DRIVERS}


def describe(type_name: str) -> DriverDescription:
    try:
        return BY_TYPE[type_name]
    except KeyError:
        known = ", ".join(BY_TYPE)
        raise ValueError(f"unknown terminal type {type_name!r} (known: {known})") from None


def create_driver(config: TerminalConfig) -> Driver:
    """Build the driver for one terminal's config entry (its `type` picks the family)."""
    return describe(config.type).create(config)
