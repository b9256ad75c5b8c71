"""Getting one request to one Anviz terminal and its reply back: a serial bus or TCP.

`make_link()` picks the link for an endpoint; the driver uses nothing else from the transport
layer but the `Link` interface. The code lives in modules by job, re-exported here:
  link.py         the shared request/reply/retry logic and the link's counters
  serial_bus.py   the one owner of a serial port, shared by every terminal on the line
  serial_link.py  one terminal on a serial bus
  tcp_link.py     one terminal over TCP, with real-time pushes and heartbeats
"""

from __future__ import annotations

from punchgate.drivers.anviz.endpoint import Endpoint, SerialEndpoint
from punchgate.drivers.anviz.link import Link, LinkStats
from punchgate.drivers.anviz.serial_bus import SerialBus, acquire_bus, release_bus
from punchgate.drivers.anviz.serial_link import SerialLink
from punchgate.drivers.anviz.tcp_link import TcpLink

__all__ = [
    "Link",
    "LinkStats",
    "SerialBus",
    "SerialLink",
    "TcpLink",
    "acquire_bus",
    "make_link",
    "release_bus",
]


def make_link(endpoint: Endpoint, *, name: str, device_id: int, timeout: float, attempts: int) -> Link:
    if isinstance(endpoint, SerialEndpoint):
        return SerialLink(endpoint, name=name, device_id=device_id, timeout=timeout, attempts=attempts)
    return TcpLink(endpoint, name=name, device_id=device_id, timeout=timeout, attempts=attempts)
