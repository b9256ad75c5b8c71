"""Keeping a closed terminal's ports taken, so that "nothing listens here" stays true.

An emulated terminal that refuses connections closes its listeners. A port left free can be
taken by any other process binding port 0 (another test's emulator, a benchmark's fleet), and
the gateway would then reach a different terminal at the address it knows: a test of an
unreachable terminal saw `device_replaced` instead. A socket bound without listening keeps the
port: TCP connects are refused (the kernel answers RST when nobody listens) and UDP datagrams
go unread, exactly what a switched-off terminal gives.
"""

from __future__ import annotations

import contextlib
import socket


def hold_port(host: str, port: int, kind: str) -> socket.socket | None:
    """A socket bound to `host`:`port` (`kind` "tcp" or "udp") that never listens or reads;
    None if the port cannot be held (then it is merely closed, as before)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    # Without SO_REUSEADDR first: then no other socket can bind the port at all. Connections
    # the listener accepted may linger in TIME_WAIT, which only SO_REUSEADDR binds beside
    # (still refusing anyone binding without it).
    for reuse in (False, True):
        sock = socket.socket(family, sock_type)
        try:
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return sock
        except OSError:
            sock.close()
    return None


def release(held: list[socket.socket]) -> None:
    """Close every held socket (before the listeners bind the ports again)."""
    while held:
        with contextlib.suppress(OSError):
            held.pop().close()
