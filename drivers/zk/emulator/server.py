"""The terminal's listeners and the connections they accept, up to raw packets.

`TerminalServer` binds TCP and/or UDP, turns each TCP stream into packets, queues UDP
datagrams for one worker (a real terminal answers one request at a time), makes every
client take the session slot before it is served, and hands each packet to `on_packet`.
It also owns the background tasks, so stopping leaves nothing behind. What a packet means
is not its business.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.active_faults import ActiveFaults
from punchgate.drivers.zk.emulator.counters import CounterBook
from punchgate.drivers.zk.emulator.links import Link, TcpLink, UdpLink
from punchgate.drivers.zk.emulator.port_hold import hold_port, release
from punchgate.drivers.zk.emulator.session_slot import SessionSlot

if TYPE_CHECKING:
    from punchgate.drivers.zk.emulator.terminal import ZkEmulator

PacketHandler = Callable[[Link, bytes], Awaitable[None]]

# Forget old UDP peers beyond this many, so a busy CLI does not grow forever.
_MAX_UDP_PEERS = 256


class TerminalServer:
    """Listeners, connection handlers and the UDP worker of one emulated terminal."""

    def __init__(
        self,
        terminal: ZkEmulator,
        *,
        slot: SessionSlot,
        faults: ActiveFaults,
        counters: CounterBook,
        log: FilteringBoundLogger,
        tcp_port: int,
        udp_port: int,
        on_packet: PacketHandler,
    ) -> None:
        self._terminal = terminal  # read for `host` and `transports`
        self._slot = slot
        self._faults = faults
        self._counters = counters
        self._log = log
        self._on_packet = on_packet
        self._wanted_ports = {"tcp": tcp_port, "udp": udp_port}
        self._tcp_server: asyncio.Server | None = None
        self._udp_endpoint: asyncio.DatagramTransport | None = None
        self._held: list[socket.socket] = []  # the ports kept while nothing listens (port_hold)
        self._udp_queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self._udp_links: dict[tuple[str, int], UdpLink] = {}
        self._udp_worker_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._links: set[Link] = set()
        self.running = False

    # ------------------------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.running = True
        self._udp_worker_task = self.spawn(self._udp_worker())
        await self.open_listeners()

    async def stop(self) -> None:
        """Close listeners and every connection; no task is left behind."""
        self.running = False
        await self.close_listeners()
        release(self._held)
        for link in list(self._links):
            link.close()
        if self._udp_worker_task is not None:
            self._udp_worker_task.cancel()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        # Closed links end their connection handlers; give them a moment, then cancel.
        _, stuck = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)

    @property
    def tcp_port(self) -> int | None:
        if self._tcp_server is None or not self._tcp_server.sockets:
            return None
        return int(self._tcp_server.sockets[0].getsockname()[1])

    @property
    def udp_port(self) -> int | None:
        if self._udp_endpoint is None:
            return None
        return int(self._udp_endpoint.get_extra_info("sockname")[1])

    async def open_listeners(self) -> None:
        """Bind whatever is not bound; a port once bound is bound again after a restart."""
        release(self._held)
        terminal = self._terminal
        if "tcp" in terminal.transports and self._tcp_server is None:
            self._tcp_server = await asyncio.start_server(
                self._serve_tcp, terminal.host, self._wanted_ports["tcp"], reuse_address=True
            )
            self._wanted_ports["tcp"] = self.tcp_port or 0
        if "udp" in terminal.transports and self._udp_endpoint is None:
            loop = asyncio.get_running_loop()
            endpoint, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(terminal.host, self._wanted_ports["udp"])
            )
            self._udp_endpoint = endpoint
            self._wanted_ports["udp"] = self.udp_port or 0

    async def close_listeners(self, *, hold_ports: bool = False) -> None:
        """Close the listeners; with `hold_ports`, keep their ports bound without listening, so
        that nothing else takes them while the terminal refuses connections."""
        if hold_ports:
            host = self._terminal.host
            for kind in ("tcp", "udp"):
                port = self.tcp_port if kind == "tcp" else self.udp_port
                if port is None:
                    continue
                await self._close_listener(kind)
                held = hold_port(host, port, kind)
                if held is not None:
                    self._held.append(held)
            return
        await self._close_listener("tcp")
        await self._close_listener("udp")

    async def _close_listener(self, kind: str) -> None:
        if kind == "tcp" and self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        if kind == "udp" and self._udp_endpoint is not None:
            self._udp_endpoint.close()
            self._udp_endpoint = None
            self._udp_links.clear()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a task that `stop` waits for (or cancels)."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def note_garbage(self, link: Link, junk: bytes) -> None:
        """Count and log bytes from `link` that are not a packet."""
        self._counters.bump(garbage_count=1)
        self._log.warning("zk_garbage_received", peer=link.peer, size=len(junk), raw=junk[:256].hex())

    # ------------------------------------------------------------------------------------
    # TCP
    # ------------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        link = TcpLink(writer)
        self._links.add(link)
        self._log.debug("zk_tcp_accepted", peer=link.peer)
        reassembler = p.TcpReassembler(on_garbage=lambda junk: self.note_garbage(link, junk))
        try:
            while not link.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for raw in reassembler.feed(data):
                    if link.abandoned or link.closed or "hang" in self._faults:
                        continue
                    if self._slot.owner is not link:
                        await self._slot.claim(link)
                    await self._on_packet(link, raw)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a handler; ending quietly keeps asyncio's server callback
            # from logging the cancellation as an error.
            pass
        finally:
            self._slot.release(link)
            link.close()
            self._links.discard(link)
            self._log.debug("zk_tcp_closed", peer=link.peer)

    # ------------------------------------------------------------------------------------
    # UDP
    # ------------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, address: tuple[str, int]) -> None:
        self._udp_queue.put_nowait((data, address))

    async def _udp_worker(self) -> None:
        # One worker serialises UDP requests, so slow replies delay the next one as on
        # a real single-threaded terminal.
        while True:
            data, address = await self._udp_queue.get()
            if self._udp_endpoint is None or "hang" in self._faults:
                continue
            link = self._udp_link(self._udp_endpoint, address)
            if not self._admit_udp(link):
                continue
            try:
                await self._on_packet(link, data)
            finally:
                if self._slot.owner is link and self._slot.session is None:
                    self._slot.release(link)

    def _udp_link(self, endpoint: asyncio.DatagramTransport, address: tuple[str, int]) -> UdpLink:
        link = self._udp_links.get(address)
        if link is None:
            link = self._udp_links[address] = UdpLink(endpoint, address)
            if len(self._udp_links) > _MAX_UDP_PEERS:
                for stale in list(self._udp_links)[: _MAX_UDP_PEERS // 2]:
                    if self._udp_links[stale] is not self._slot.owner:
                        del self._udp_links[stale]
        return link

    def _admit_udp(self, link: UdpLink) -> bool:
        """Let `link` take the slot, unless another client holds it (then count and ignore)."""
        slot = self._slot
        if slot.owner is not None and slot.owner is not link:
            slot.evict_idle_owner()
        if slot.owner is not None and slot.owner is not link:
            self._counters.bump(busy_rejections=1)
            self._log.debug("zk_busy_ignored", peer=link.peer)
            return False
        if slot.owner is None:
            slot.take(link)
        return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: TerminalServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._server.datagram_received(data, addr)
