"""One Anviz terminal over TCP (the terminal in server mode, port 5010 by default).

One connection per terminal. A reader task sorts incoming frames, because the device may push
a real-time record (0xDF) or a heartbeat (0x7F) between a request and its reply: pushes go to
`TcpLink.pushes`, heartbeats get their pong, and only the awaited reply ends an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from punchgate.drivers.anviz.commands import ACK_PONG, ACK_REALTIME_RECORD, CMD_HEARTBEAT, RET_SUCCESS
from punchgate.drivers.anviz.endpoint import TcpEndpoint
from punchgate.drivers.anviz.frame_decoder import FrameDecoder
from punchgate.drivers.anviz.frames import Garbage, Request, Response
from punchgate.drivers.anviz.link import AttemptFailed, Link, expected_ack
from punchgate.drivers.base import UnreachableError

log = structlog.get_logger(__name__)


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
                raise AttemptFailed(f"no reply within {self.timeout:g}s", garbled=False) from None
            except OSError as exc:
                await self.close()
                raise AttemptFailed(f"connection lost: {exc}", garbled=False) from exc
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
            self._waiter[1].set_exception(AttemptFailed("connection closed by the terminal", garbled=False))

    def _on_garbage(self, garbage: Garbage) -> None:
        self._count_garbage(garbage, self.endpoint.url())
        if self._waiter is not None and not self._waiter[1].done():
            # our reply was probably in there: retry now rather than wait out the timeout
            self._waiter[1].set_exception(AttemptFailed(garbage.reason, garbled=True))

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
            and item.ack == expected_ack(self._waiter[0])
            and not self._waiter[1].done()
        ):
            self._waiter[1].set_result(item)
        else:
            self.stats.unexpected_frames += 1
            raw = item.raw if isinstance(item, Response) else item.encode()
            log.warning("anviz_unexpected_frame", device=self.name, raw=raw.hex())
