"""Real-time punches of one ZK terminal, read by asyncio from the session's socket.

pyzk's `live_capture` holds a thread for as long as it listens and decodes only 12-, 32-
and 36-byte events (10-byte payloads are skipped, 14 and 37 bytes crash it). Here the driver
registers for EF_ATTLOG through pyzk, then reads the socket with asyncio itself: no pool
thread is held while a terminal is quiet, every event is acknowledged, decoded by the codec
for every payload size, and a tick (None) is yielded after `LIVE_TICK_SECONDS` without a
punch, quiet or flooded with other packets, so the worker can leave to reconcile. A packet
announcing more than `limits.MAX_REPLY_BYTES` is skipped as garbage, never waited for.
Closing the stream unregisters from asyncio too, so an event already on its way is never
taken by pyzk for the reply (see `pyzk_patches`).

While the stream is open the socket belongs to it (`ZkSession.live_active` refuses
commands); it is handed back blocking, with the session's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Final

import structlog

from punchgate.drivers.base import DriverError, DriverTimeoutError, RawPunch, UnreachableError
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.client import ZkClient
from punchgate.drivers.zk.errors import map_error
from punchgate.drivers.zk.limits import MAX_REPLY_BYTES
from punchgate.drivers.zk.session import ZkSession

log = structlog.get_logger(__name__)

LIVE_TICK_SECONDS: Final = 1.0


class LiveChannel:
    """The real-time event stream of one terminal, over whatever session is open."""

    def __init__(self, session: ZkSession) -> None:
        self._session = session
        self.name = session.name
        # internal uid -> user id, for events that carry only the uid (set by read_users)
        self.user_ids: dict[int, str] = {}
        self.garbage_frames = 0  # frames that failed to decode (logged with hex)
        self.dropped_events = 0  # live events that could not be decoded

    async def events(self, prepare: Callable[[], Awaitable[None]]) -> AsyncGenerator[RawPunch | None, None]:
        """Real-time ATTLOG events, read by asyncio from pyzk's socket (no pool thread held).

        `prepare` runs once the session is checked and before registering (the driver
        learns the user ids there). While registered, the socket belongs to this generator;
        pyzk does not touch it. The socket is made non-blocking for asyncio and given back
        blocking with its timeout.
        """
        session = self._session
        zk = session.current()
        await prepare()
        await session.run("register events", lambda: zk.reg_event(zp.EF_ATTLOG))
        loop = asyncio.get_running_loop()
        sock = zk.sock
        sock.setblocking(False)
        session.live_active = True
        reassembler = (
            zp.TcpReassembler(max_length=MAX_REPLY_BYTES, on_garbage=self._garbage) if zk.tcp else None
        )
        # Bytes the last command's read took past its reply (an event on its way) come first.
        queued = [zk.link.take_pending()] if reassembler is not None else []
        pending: asyncio.Future[bytes] | None = None
        last_yield = loop.time()
        try:
            while True:
                if queued:
                    chunk = queued.pop()
                else:
                    if pending is None:
                        pending = asyncio.ensure_future(loop.sock_recv(sock, 65536))
                    done, _ = await asyncio.wait({pending}, timeout=LIVE_TICK_SECONDS)
                    if not done:
                        last_yield = loop.time()
                        yield None  # idle tick: the worker may leave to reconcile
                        continue
                    try:
                        chunk = self._received(pending, zk)
                    finally:
                        pending = None
                packets = reassembler.feed(chunk) if reassembler is not None else [chunk]
                for packet in packets:
                    punch = await self._on_event_packet(loop, sock, packet)
                    if punch is not None:
                        last_yield = loop.time()
                        yield punch
                if loop.time() - last_yield >= LIVE_TICK_SECONDS:
                    # Busy with packets that are no punches: still let the worker leave.
                    last_yield = loop.time()
                    yield None
        finally:
            leftover = b""
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    leftover = await pending  # bytes read just before the cancel still count
            await self._end_live_unless_cancelled(loop, zk, sock, reassembler, leftover)

    async def _end_live_unless_cancelled(
        self,
        loop: asyncio.AbstractEventLoop,
        zk: ZkClient,
        sock: socket.socket,
        reassembler: zp.TcpReassembler | None,
        leftover: bytes,
    ) -> None:
        """End the stream; when it ends because its task is cancelled, a failure to unregister
        must not replace the cancellation (the worker would take it for a terminal fault and
        carry on past its shutdown). The session stays marked out of step either way."""
        try:
            await self._end_live(loop, zk, sock, reassembler, leftover)
        except DriverError as exc:
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                raise
            log.info("zk_live_end_failed_while_cancelled", device=self.name, error=str(exc))

    def _received(self, pending: asyncio.Future[bytes], zk: ZkClient) -> bytes:
        """The bytes a finished recv got; a failed or closed socket ends the stream."""
        try:
            chunk = pending.result()
        except OSError as exc:
            self._session.desynced = True
            raise map_error(exc, device=self.name, what="live", connecting=False) from exc
        if not chunk and zk.tcp:
            self._session.desynced = True
            raise UnreachableError("live: the terminal closed the connection", device=self.name)
        return chunk

    def _garbage(self, raw: bytes) -> None:
        self.garbage_frames += 1
        log.warning("zk_garbage_frame", device=self.name, raw=raw[:256].hex(), size=len(raw))

    async def _send(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, packet: bytes, tcp: bool
    ) -> None:
        await loop.sock_sendall(sock, zp.tcp_wrap(packet) if tcp else packet)

    async def _ack(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, zk: ZkClient, reply: int
    ) -> None:
        """Acknowledge an event, echoing its reply number, or the terminal resends it."""
        await self._send(loop, sock, zp.build_packet(zp.CMD_ACK_OK, zk.session_id, reply), zk.tcp)

    async def _on_event_packet(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, raw: bytes
    ) -> RawPunch | None:
        zk = self._session.client
        assert zk is not None
        try:
            packet = zp.parse_packet(raw)
        except zp.ZkFrameError:
            self._garbage(raw)
            return None
        if packet.command != zp.CMD_REG_EVENT:
            log.debug("zk_live_unexpected_packet", device=self.name, command=packet.command)
            return None
        await self._ack(loop, sock, zk, packet.reply)
        if packet.session != zp.EF_ATTLOG:  # the session field carries the event code
            log.debug("zk_live_other_event", device=self.name, event_code=packet.session)
            return None
        try:
            event = zp.decode_live_attendance(packet.data)
        except zp.ZkFrameError as exc:
            # Not lost: the next full read reconciles against the terminal's log.
            self.dropped_events += 1
            log.warning("zk_live_event_undecodable", device=self.name, error=str(exc), raw=packet.data.hex())
            return None
        user_id = event.user_id
        if len(packet.data) in (10, 14) and self.user_ids:
            user_id = self.user_ids.get(int(event.user_id), event.user_id)
        return RawPunch(
            user_id=user_id, timestamp=event.timestamp, state=event.state, verify=event.verify, raw=event.raw
        )

    async def _end_live(
        self,
        loop: asyncio.AbstractEventLoop,
        zk: ZkClient,
        sock: socket.socket,
        reassembler: zp.TcpReassembler | None,
        leftover: bytes = b"",
    ) -> None:
        """Unregister events (REG_EVENT 0) from asyncio and hand the socket back to pyzk.

        Done here rather than with pyzk's reg_event(0) because an event already on its way
        would be read by pyzk as the reply, and every later reply would be off by one.
        Events that arrive meanwhile are acknowledged and left to the next full read.
        """
        session = self._session
        session.live_active = False
        try:
            if session.client is not zk or session.desynced or sock.fileno() < 0:
                return
            # Out of step until the unregistration's reply is seen (whatever fails meanwhile).
            session.desynced = True
            reply_no = zk.next_reply_number()
            request = zp.build_packet(zp.CMD_REG_EVENT, zk.session_id, reply_no, struct.pack("<I", 0))
            await self._send(loop, sock, request, zk.tcp)
            await self._await_unregistered(loop, zk, sock, reassembler, leftover, reply_no)
            zk.set_reply_number(reply_no)
            session.desynced = False
        except OSError as exc:
            raise map_error(exc, device=self.name, what="live", connecting=False) from exc
        finally:
            with contextlib.suppress(OSError):
                if sock.fileno() >= 0:
                    sock.settimeout(session.timeout)  # blocking again, for pyzk

    async def _await_unregistered(
        self,
        loop: asyncio.AbstractEventLoop,
        zk: ZkClient,
        sock: socket.socket,
        reassembler: zp.TcpReassembler | None,
        chunk: bytes,
        reply_no: int,
    ) -> None:
        """Read until the reply to the unregistration, acknowledging events that come first."""
        deadline = loop.time() + self._session.timeout
        while True:
            if not chunk:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise DriverTimeoutError("live: no answer to unregistering events", device=self.name)
                try:
                    async with asyncio.timeout(remaining):  # never swallows a cancellation
                        chunk = await loop.sock_recv(sock, 65536)
                except TimeoutError:
                    continue
            if not chunk and zk.tcp:
                raise UnreachableError("live: the terminal closed the connection", device=self.name)
            for raw in reassembler.feed(chunk) if reassembler is not None else [chunk]:
                try:
                    packet = zp.parse_packet(raw)
                except zp.ZkFrameError:
                    self._garbage(raw)
                    continue
                if packet.command == zp.CMD_REG_EVENT:
                    await self._ack(loop, sock, zk, packet.reply)
                    log.info("zk_live_event_left_for_reconcile", device=self.name, event_code=packet.session)
                elif packet.reply == reply_no:
                    return
            chunk = b""
