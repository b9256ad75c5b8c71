"""Getting one request to one Anviz terminal and its reply back: a serial bus or TCP.

`Link.request()` is the only call the driver needs. It sends a frame, waits for the reply
with the expected ACK from the expected device id, and retries a bounded number of times
when nothing comes back or what comes back is garbage. Garbage is logged with its raw bytes
(hex) and counted, never raised to the caller unless every attempt failed.

Serial: several terminals with different device ids share one RS485 line, so every link on
the same port goes through ONE `SerialBus` (a module-level registry keyed by the port's real
path) whose lock serialises exchanges. pyserial blocks, so the bus runs in worker threads.
TCP: one connection per terminal; a reader task sorts incoming frames, because the device
may push a real-time record (0xDF) or a heartbeat (0x7F) between a request and its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import serial
import serial.rs485
import structlog

from punchgate.drivers.anviz.codec import (
    ACK_PONG,
    ACK_REALTIME_RECORD,
    CMD_HEARTBEAT,
    RET_SUCCESS,
    FrameDecoder,
    Garbage,
    Request,
    Response,
)
from punchgate.drivers.anviz.endpoint import Endpoint, SerialEndpoint, TcpEndpoint
from punchgate.drivers.base import ProtocolError, UnreachableError

log = structlog.get_logger(__name__)

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_POLL_SECONDS = 0.01  # pyserial read timeout inside the receive loop


@dataclass(slots=True)
class LinkStats:
    """Counters for one terminal's link, reported in DeviceInfo.extra and the probe."""

    requests: int = 0
    retries: int = 0
    garbage_frames: int = 0
    garbage_bytes: int = 0
    no_reply: int = 0
    unexpected_frames: int = 0


class _AttemptFailed(Exception):
    """One attempt got no usable reply; `garbled` tells garbage from silence."""

    def __init__(self, detail: str, *, garbled: bool) -> None:
        super().__init__(detail)
        self.garbled = garbled


def _expected_ack(request: Request) -> int:
    return request.command | 0x80


class Link(ABC):
    """One terminal's path: send a request, get its reply, retry a bounded number of times."""

    def __init__(self, *, name: str, device_id: int, timeout: float, attempts: int) -> None:
        self.name = name
        self.device_id = device_id
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.stats = LinkStats()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _attempt(self, request: Request) -> Response: ...

    @property
    def supports_push(self) -> bool:
        return False

    async def request(
        self, request: Request, *, retry: Request | None = None, attempts: int | None = None
    ) -> Response:
        """Send `request` (then `retry`, when given, on later attempts) and return the reply.

        A reply with RET != success is returned, not raised: it is a valid answer. Raises
        UnreachableError when nothing answered at all, ProtocolError when only garbage did.
        """
        self.stats.requests += 1
        attempts = attempts or self.attempts
        garbled = False
        last = ""
        for attempt in range(attempts):
            frame = request if attempt == 0 or retry is None else retry
            if attempt:
                self.stats.retries += 1
                log.info("anviz_retry", device=self.name, attempt=attempt + 1, reason=last)
            try:
                return await self._attempt(frame)
            except _AttemptFailed as failure:
                garbled = garbled or failure.garbled
                last = str(failure)
                if not failure.garbled:
                    self.stats.no_reply += 1
        what = f"command 0x{request.command:02X} to device {self.device_id}"
        if garbled:
            raise ProtocolError(f"{what}: only garbage after {attempts} attempts ({last})", device=self.name)
        raise UnreachableError(f"{what}: no answer after {attempts} attempts ({last})", device=self.name)

    async def request_ok(
        self, request: Request, *, retry: Request | None = None, attempts: int | None = None
    ) -> Response:
        """Like `request`, but a refusal (RET != success) is a ProtocolError."""
        response = await self.request(request, retry=retry, attempts=attempts)
        if response.ret != RET_SUCCESS:
            raise ProtocolError(
                f"command 0x{request.command:02X} refused with RET 0x{response.ret:02X}", device=self.name
            )
        return response

    def _count_garbage(self, garbage: Garbage, where: str) -> None:
        self.stats.garbage_frames += 1
        self.stats.garbage_bytes += len(garbage.raw)
        log.warning(
            "anviz_garbage_discarded",
            device=self.name,
            where=where,
            reason=garbage.reason,
            raw=garbage.raw.hex(),
            total=self.stats.garbage_frames,
        )


# ---- serial ---------------------------------------------------------------------------------


class SerialBus:
    """The one owner of a serial port. Its lock makes exchanges on the line strictly one at a time.

    The port opens lazily and reopens after an error, so a missing USB adapter at start-up or
    an unplug costs an `unreachable` fault, not the daemon.
    """

    def __init__(self, endpoint: SerialEndpoint) -> None:
        self.endpoint = endpoint
        self.users = 0
        self._lock = threading.Lock()
        self._port: serial.Serial | None = None
        self._last_activity = 0.0

    def _open(self) -> serial.Serial:
        if self._port is not None:
            return self._port
        ep = self.endpoint
        port_class = serial.rs485.RS485 if ep.rs485 == "rts" else serial.Serial
        try:
            port = port_class(port=None, baudrate=ep.baud, parity=_PARITY[ep.parity], bytesize=8, stopbits=1)
            port.port = ep.port
            port.timeout = _POLL_SECONDS
            port.write_timeout = 5.0
            if ep.rs485 != "none":
                # the driver-enable guard times from the Arduino implementation (50 ms each side)
                port.rs485_mode = serial.rs485.RS485Settings(delay_before_tx=0.05, delay_before_rx=0.05)
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _AttemptFailed(f"cannot open {ep.port}: {exc}", garbled=False) from exc
        log.info("anviz_serial_opened", port=ep.port, baud=ep.baud, parity=ep.parity, rs485=ep.rs485)
        self._port = port
        return port

    def close(self) -> None:
        with self._lock:
            if self._port is not None:
                with contextlib.suppress(serial.SerialException, OSError):
                    self._port.close()
                self._port = None

    def exchange(self, request: Request, timeout: float, garbage: list[Garbage]) -> Response:
        """Blocking: one request, one reply. Garbage seen on the way is appended to `garbage`."""
        with self._lock:
            try:
                return self._exchange_locked(request, timeout, garbage)
            except (serial.SerialException, OSError) as exc:
                # the adapter went away or the pty closed: start from a fresh open next time
                with contextlib.suppress(serial.SerialException, OSError):
                    if self._port is not None:
                        self._port.close()
                self._port = None
                raise _AttemptFailed(f"serial error on {self.endpoint.port}: {exc}", garbled=False) from exc
            finally:
                self._last_activity = time.monotonic()

    def _exchange_locked(self, request: Request, timeout: float, garbage: list[Garbage]) -> Response:
        port = self._open()
        gap = self.endpoint.gap_ms / 1000
        idle = time.monotonic() - self._last_activity
        if idle < gap:
            time.sleep(gap - idle)
        stale = port.read(port.in_waiting) if port.in_waiting else b""
        if stale:
            # a late reply to an abandoned attempt, or noise: it must not be taken as our answer
            garbage.append(Garbage(stale, "stray bytes before request"))
        port.write(request.encode())
        port.flush()
        return self._receive(port, request, timeout, garbage)

    def _receive(
        self, port: serial.Serial, request: Request, timeout: float, garbage: list[Garbage]
    ) -> Response:
        decoder = FrameDecoder()
        quiet = self.endpoint.quiet_ms / 1000
        deadline = time.monotonic() + timeout
        last_byte = time.monotonic()
        broken = False
        while True:
            now = time.monotonic()
            if decoder.pending and now - last_byte >= quiet:
                # the line went quiet in the middle of something: that reply is not coming
                flushed = decoder.flush()
                if flushed is not None:
                    garbage.append(flushed)
                broken = True
            if broken and not decoder.pending:
                raise _AttemptFailed(garbage[-1].reason if garbage else "garbled reply", garbled=True)
            if now >= deadline:
                raise _AttemptFailed(f"no reply within {timeout:g}s", garbled=bool(decoder.pending))
            chunk = port.read(max(1, port.in_waiting))
            if not chunk:
                continue
            last_byte = time.monotonic()
            for item in decoder.feed(chunk):
                if isinstance(item, Garbage):
                    garbage.append(item)
                    broken = True
                elif (
                    isinstance(item, Response)
                    and item.device_id == request.device_id
                    and item.ack == _expected_ack(request)
                ):
                    return item
                elif item == request:
                    continue  # our own request: some 2-wire RS485 adapters echo what they send
                else:
                    # another terminal's late reply, or another host's request
                    garbage.append(
                        Garbage(item.raw if isinstance(item, Response) else item.encode(), "unexpected frame")
                    )


_buses: dict[str, SerialBus] = {}
_buses_lock = threading.Lock()


def acquire_bus(endpoint: SerialEndpoint) -> SerialBus:
    """The shared bus for this port; every terminal on one port must agree on the line settings."""
    key = os.path.realpath(endpoint.port)
    with _buses_lock:
        bus = _buses.get(key)
        if bus is None:
            bus = _buses[key] = SerialBus(endpoint)
        elif bus.endpoint.line_settings() != endpoint.line_settings():
            raise ValueError(
                f"serial port {endpoint.port} is already used with {bus.endpoint.url()}; "
                f"all terminals on one bus need the same baud/parity/rs485 settings"
            )
        bus.users += 1
        return bus


def release_bus(bus: SerialBus) -> None:
    with _buses_lock:
        bus.users -= 1
        if bus.users > 0:
            return
        _buses.pop(os.path.realpath(bus.endpoint.port), None)
    bus.close()


class SerialLink(Link):
    """One terminal (one device id) on a shared serial bus."""

    def __init__(
        self, endpoint: SerialEndpoint, *, name: str, device_id: int, timeout: float, attempts: int
    ) -> None:
        super().__init__(name=name, device_id=device_id, timeout=timeout, attempts=attempts)
        self.endpoint = endpoint
        self._bus: SerialBus | None = None

    async def open(self) -> None:
        if self._bus is None:
            self._bus = acquire_bus(self.endpoint)

    async def close(self) -> None:
        if self._bus is not None:
            bus, self._bus = self._bus, None
            await asyncio.to_thread(release_bus, bus)

    async def _attempt(self, request: Request) -> Response:
        await self.open()
        assert self._bus is not None
        garbage: list[Garbage] = []
        try:
            return await asyncio.to_thread(self._bus.exchange, request, self.timeout, garbage)
        finally:
            for item in garbage:
                self._count_garbage(item, self.endpoint.port)


# ---- TCP ------------------------------------------------------------------------------------


class TcpLink(Link):
    """One terminal over TCP (the terminal in server mode, port 5010 by default)."""

    def __init__(
        self,
        endpoint: TcpEndpoint,
        *,
        name: str,
        device_id: int,
        timeout: float,
        attempts: int,
        quiet: float = 0.3,
    ) -> None:
        super().__init__(name=name, device_id=device_id, timeout=timeout, attempts=attempts)
        self.endpoint = endpoint
        self.pushes: asyncio.Queue[Response] = asyncio.Queue(maxsize=10_000)
        self._quiet = quiet
        self._reader_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiter: tuple[Request, asyncio.Future[Response]] | None = None
        self._lock = asyncio.Lock()

    @property
    def supports_push(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return self._reader_task is not None and not self._reader_task.done()

    async def open(self) -> None:
        if self.connected:
            return
        await self.close()
        ep = self.endpoint
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise UnreachableError(
                f"cannot connect to {ep.url()}: {exc or 'timed out'}", device=self.name
            ) from exc
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_loop(reader), name=f"anviz-read-{self.name}")
        log.info("anviz_tcp_connected", device=self.name, endpoint=ep.url())

    async def close(self) -> None:
        task, self._reader_task = self._reader_task, None
        writer, self._writer = self._writer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _attempt(self, request: Request) -> Response:
        async with self._lock:
            await self.open()
            assert self._writer is not None
            future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._waiter = (request, future)
            try:
                self._writer.write(request.encode())
                await self._writer.drain()
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                raise _AttemptFailed(f"no reply within {self.timeout:g}s", garbled=False) from None
            except OSError as exc:
                await self.close()
                raise _AttemptFailed(f"connection lost: {exc}", garbled=False) from exc
            finally:
                self._waiter = None

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                try:
                    wait = self._quiet if decoder.pending else None
                    chunk = await asyncio.wait_for(reader.read(4096), wait)
                except TimeoutError:
                    flushed = decoder.flush()
                    if flushed is not None:
                        self._on_garbage(flushed)
                    continue
                if not chunk:
                    break
                for item in decoder.feed(chunk):
                    self._dispatch(item)
        except OSError as exc:
            log.warning("anviz_tcp_read_failed", device=self.name, error=str(exc))
        log.info("anviz_tcp_closed", device=self.name)
        if self._waiter is not None and not self._waiter[1].done():
            self._waiter[1].set_exception(_AttemptFailed("connection closed by the terminal", garbled=False))

    def _on_garbage(self, garbage: Garbage) -> None:
        self._count_garbage(garbage, self.endpoint.url())
        if self._waiter is not None and not self._waiter[1].done():
            # our reply was probably in there: retry now rather than wait out the timeout
            self._waiter[1].set_exception(_AttemptFailed(garbage.reason, garbled=True))

    def _dispatch(self, item: Request | Response | Garbage) -> None:
        if isinstance(item, Garbage):
            self._on_garbage(item)
        elif isinstance(item, Request) and item.command == CMD_HEARTBEAT:
            if self._writer is not None:
                self._writer.write(Response(item.device_id, ACK_PONG, RET_SUCCESS).encode())
        elif isinstance(item, Response) and item.ack == ACK_REALTIME_RECORD:
            try:
                self.pushes.put_nowait(item)
            except asyncio.QueueFull:
                # the records stay on the terminal with their new flag: the next poll gets them
                log.warning("anviz_push_queue_full", device=self.name, raw=item.raw.hex())
        elif (
            isinstance(item, Response)
            and self._waiter is not None
            and item.device_id == self._waiter[0].device_id
            and item.ack == _expected_ack(self._waiter[0])
            and not self._waiter[1].done()
        ):
            self._waiter[1].set_result(item)
        else:
            self.stats.unexpected_frames += 1
            raw = item.raw if isinstance(item, Response) else item.encode()
            log.warning("anviz_unexpected_frame", device=self.name, raw=raw.hex())


def make_link(endpoint: Endpoint, *, name: str, device_id: int, timeout: float, attempts: int) -> Link:
    if isinstance(endpoint, SerialEndpoint):
        return SerialLink(endpoint, name=name, device_id=device_id, timeout=timeout, attempts=attempts)
    return TcpLink(endpoint, name=name, device_id=device_id, timeout=timeout, attempts=attempts)
