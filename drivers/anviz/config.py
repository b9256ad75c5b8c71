"""The `[[terminals]]` entry of an Anviz TC_B terminal on a serial line or TCP."""

from __future__ import annotations

import os
import re
import stat
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from punchgate.drivers.anviz.endpoint import SerialEndpoint, parse_endpoint
from punchgate.drivers.config import Claim, TerminalConfig, check_host, host_key

_ENDPOINT_HINT = 'an Anviz terminal takes `endpoint` = "tcp://host:5010" or "serial:///dev/ttyUSB0"'

# Device nodes that are never a serial line: disks and partitions, and the kernel's special
# files. Anything else under /dev (ttyUSB*, ttyS*, ttyAMA*, serial/by-id/*, pts/*, rfcomm*,
# a socat link elsewhere) is accepted; whether it opens is the driver's business at run time.
_DISK = re.compile(
    r"/dev/(?:sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|loop\d|dm-\d|md\d|sr\d|nbd\d|zram\d|ram\d)"
)
_SPECIAL = re.compile(
    r"/dev/(?:null|zero|full|random|urandom|mem|kmem|port|kmsg|console|tty|ptmx|fb\d+|stdin|stdout|stderr)"
    r"|/dev/(?:disk|mapper|block|bus|input|snd|dri|shm|fd|char|cpu|net|hugepages|mqueue)(?:/.*)?"
)


def check_serial_device(path: str) -> None:
    """ValueError if `path` can never be a serial line (a disk, /dev/null, a directory...)."""
    if any(ord(c) < 32 for c in path):
        raise ValueError(f"{path!r} contains control characters")
    if _DISK.match(path):
        raise ValueError(
            f"{path} is a disk, not a serial port: use the serial adapter's device, "
            "e.g. /dev/ttyUSB0 or /dev/serial/by-id/..."
        )
    if _SPECIAL.fullmatch(path):
        raise ValueError(
            f"{path} is not a serial port: use the serial adapter's device, e.g. /dev/ttyUSB0 or /dev/ttyS0"
        )
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # absent (an unplugged USB adapter) or unreadable: the driver reports it at run time
    if not stat.S_ISCHR(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a disk" if stat.S_ISBLK(mode) else "not a device"
        raise ValueError(
            f"{path} is {kind}, not a serial port: use the serial adapter's device, e.g. /dev/ttyUSB0"
        )


class AnvizTerminal(TerminalConfig):
    key_hints: ClassVar[dict[str, str]] = {
        "host": _ENDPOINT_HINT,
        "port": _ENDPOINT_HINT,
        "address": _ENDPOINT_HINT,
        "device": _ENDPOINT_HINT,
        "serial": _ENDPOINT_HINT,
        "baud": 'the baud rate goes in the endpoint: "serial:///dev/ttyUSB0?baud=9600"',
        "parity": 'the parity goes in the endpoint: "serial:///dev/ttyUSB0?parity=N"',
    }

    type: Literal["anviz"] = Field(description="Anviz TC_B terminal over RS232/RS485 or TCP")
    endpoint: str = Field(
        description="serial:///dev/ttyUSB0?baud=9600&parity=N (RS232/RS485) or tcp://host:5010; see docs/anviz.md"
    )
    device_id: int = Field(
        1, ge=1, le=0xFFFFFFFF, description="the terminal's communication device id (its address on the bus)"
    )
    live: bool = Field(True, description="listen for real-time punches between polls (TCP endpoints only)")
    timeout: float = Field(2.0, gt=0, le=300, description="seconds to wait for each reply")
    retries: int = Field(2, ge=0, le=10, description="resends after a lost or corrupted reply")
    epoch: Literal["2000-01-02", "2000-01-01"] = Field(
        "2000-01-02", description="day the record clock counts from (most firmware: 2000-01-02)"
    )
    mark_read: bool = Field(
        True,
        description="clear the terminal's new-record flags after a durable commit (records stay in its log)",
    )

    @field_validator("endpoint")
    @classmethod
    def _valid_endpoint(cls, value: str) -> str:
        if len(value) > 512:
            raise ValueError(
                f"is {len(value)} characters long: write serial:///dev/ttyUSB0?baud=9600 or tcp://host:5010"
            )
        endpoint = parse_endpoint(value)  # raises ValueError saying what is wrong
        try:
            if isinstance(endpoint, SerialEndpoint):
                check_serial_device(endpoint.port)
            else:
                check_host(endpoint.host)
        except ValueError as exc:
            raise ValueError(f"endpoint {value.strip()!r}: {exc}") from None
        return value.strip()

    @property
    def clear_log(self) -> bool:
        """What the worker asks: Anviz reads only new records, so marking them read is the clear."""
        return self.mark_read

    def claims(self) -> tuple[Claim, ...]:
        endpoint = parse_endpoint(self.endpoint)
        if not isinstance(endpoint, SerialEndpoint):
            shown = endpoint.url().removeprefix("tcp://")
            return (
                Claim(
                    key=f"tcp {host_key(endpoint.host)}:{endpoint.port}",
                    label=f"TCP {shown}",
                    field="endpoint",
                    fix="each terminal needs its own host and port",
                ),
            )
        # The driver keys its shared buses by the real path (serial_bus.acquire_bus) and refuses
        # a second set of line settings on one bus, so the file is held to the same rule.
        line = os.path.realpath(endpoint.port)
        baud, parity, rs485 = endpoint.line_settings()
        return (
            Claim(
                key=f"serial {line} id {self.device_id}",
                label=f"device_id {self.device_id} on serial line {endpoint.port}",
                field="device_id",
                fix="terminals on one line need different device ids (set on each terminal's menu)",
            ),
            Claim(
                key=f"serial {line}",
                label=f"serial line {endpoint.port}",
                field="endpoint",
                fix="every terminal on one line needs the same baud, parity and rs485",
                terms=f"baud={baud}, parity={parity}, rs485={rs485}",
            ),
        )
