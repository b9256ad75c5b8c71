"""Host checks shared by the listening sections: is a bind address usable, is it loopback only."""

from __future__ import annotations

import ipaddress

from punchgate.drivers.config import check_host


def check_bind(value: str) -> str:
    """`value` if it can be listened on (an IP address or a host name); ValueError saying what to write.

    For `HttpSettings.bind`. Until that model calls it from a field validator, `Settings`
    applies it (a message at `http.bind`).
    """
    return check_host(value)


def is_loopback_bind(bind: str) -> bool:
    """Whether `bind` listens on loopback only (127.0.0.0/8, ::1, localhost)."""
    host = bind.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
