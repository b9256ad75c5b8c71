"""One client's path back from the emulator: a TCP connection or a UDP peer address.

A link turns reply packets into what goes on the wire. Every reply (with all its packets)
goes out in one write, because clients such as pyzk read each reply with one recv().
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

from punchgate.drivers.zk.emulator.profiles import Transport
from punchgate.drivers.zk.protocol import TCP_DATA_CHUNK, UDP_DATA_CHUNK, tcp_wrap


class Link(ABC):
    """Base of the two transports."""

    transport: Transport
    chunk_size: int

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.closed = False
        # A link dropped by a silent restart: kept open but never answered again, the way
        # a TCP connection to a rebooted terminal just goes quiet.
        self.abandoned = False

    @abstractmethod
    def wire_units(self, packets: Sequence[bytes]) -> list[bytes]:
        """The writes (TCP) or datagrams (UDP) that carry these packets."""

    @abstractmethod
    def send_units(self, units: Sequence[bytes]) -> None:
        """Put these writes or datagrams on the wire."""

    def send(self, packets: Sequence[bytes]) -> None:
        if packets:
            self.send_units(self.wire_units(packets))

    async def drain(self) -> None:  # noqa: B027  (UDP has no flow control: nothing to wait for)
        """Wait until the transport's buffer has room again (flow control)."""

    def close(self) -> None:
        self.closed = True


class TcpLink(Link):
    transport: Transport = "tcp"
    chunk_size = TCP_DATA_CHUNK

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        super().__init__(f"tcp:{peer[0]}:{peer[1]}" if peer else "tcp:?")
        self._writer = writer

    def wire_units(self, packets: Sequence[bytes]) -> list[bytes]:
        return [b"".join(tcp_wrap(p) for p in packets)]

    def send_units(self, units: Sequence[bytes]) -> None:
        if self.closed or self._writer.is_closing():
            return
        self._writer.write(b"".join(units))

    async def drain(self) -> None:
        if self.closed or self._writer.is_closing():
            return
        try:
            await self._writer.drain()
        except ConnectionError:
            self.close()

    def fileno(self) -> int:
        """The connection's file descriptor (-1 once closed)."""
        sock = self._writer.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._writer.close()


class UdpLink(Link):
    transport: Transport = "udp"
    chunk_size = UDP_DATA_CHUNK

    def __init__(self, endpoint: asyncio.DatagramTransport, address: tuple[str, int]) -> None:
        super().__init__(f"udp:{address[0]}:{address[1]}")
        self.address = address
        self._endpoint = endpoint

    def wire_units(self, packets: Sequence[bytes]) -> list[bytes]:
        return list(packets)

    def send_units(self, units: Sequence[bytes]) -> None:
        if self.closed or self._endpoint.is_closing():
            return
        for unit in units:
            self._endpoint.sendto(unit, self.address)
