"""One Anviz terminal over TCP (the terminal in server mode, port 5010 by default).

One connection per terminal. A reader task sorts incoming frames, because the device may push
a real-time record (0xDF) or a heartbeat (0x7F) between a request and its reply: pushes go to
`TcpLink.pushes`, heartbeats get their pong, and only the awaited reply ends an attempt.

The reader runs on the event loop, so it must never hold it for long whatever the peer sends:
it decodes at most `READ_CHUNK` bytes (a few milliseconds of work, the decoder being linear)
and then yields to the other tasks, even when more bytes are already buffered. What it queues
for the peer is bounded too: pushes by `pushes`' size, pongs by `PONG_BACKLOG`.
"""

from __future__ import annotations

import asyncio

import structlog

from punchgate.drivers.anviz.commands import ACK_PONG, ACK_REALTIME_RECORD, CMD_HEARTBEAT, RET_SUCCESS
from punchgate.drivers.anviz.endpoint import TcpEndpoint
from punchgate.drivers.anviz.frame_decoder import FrameDecoder
from punchgate.drivers.anviz.frames import Garbage, Request, Response, hex_preview
from punchgate.drivers.anviz.link import AttemptFailed, Link, expected_ack
from punchgate.drivers.base import UnreachableError

log = structlog.get_logger(__name__)

READ_CHUNK = 4096  # bytes decoded per turn of the event loop
PONG_BACKLOG = 16 * 1024  # unsent bytes past which heartbeats go unanswered: the peer is not reading


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
        self._decoder: FrameDecoder | None = None
        self._unexpected_in_attempt = 0
        self._frames_in_attempt = 0
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
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the connection completes (the worker would outlive its shutdown).
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(ep.host, ep.port)
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
            # Waited for, not awaited: awaiting it would raise its CancelledError, and
            # suppressing that would also swallow a cancellation of our own caller.
            await asyncio.wait({task})
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error  # the read loop logs what a connection does; this is a bug, not hidden
        if writer is not None:
            writer.close()
            try:
                # a peer that reads nothing would keep our unsent bytes, and this wait, forever
                async with asyncio.timeout(self.timeout):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                writer.transport.abort()

    async def _attempt(self, request: Request) -> Response:
        async with self._lock:
            await self.open()
            assert self._writer is not None
            future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._waiter = (request, future)
            self._unexpected_in_attempt = self._frames_in_attempt = 0
            try:
                # the timeout covers sending too: drain() waits for ever on a peer that reads nothing
                async with asyncio.timeout(self.timeout):
                    self._writer.write(request.encode())
                    await self._writer.drain()
                    return await future
            except TimeoutError:
                raise self._no_reply() from None
            except OSError as exc:
                await self.close()
                raise AttemptFailed(f"connection lost: {exc}", garbled=False) from exc
            finally:
                self._waiter = None

    def _no_reply(self) -> AttemptFailed:
        """The attempt timed out: garbled if frames for someone else came meanwhile, or bytes
        that form no frame (noise, or a frame begun while no frame at all completed), silent
        otherwise. Those bytes are given up on, and counted, now: the reply is not in them."""
        detail = f"no reply within {self.timeout:g}s"
        unexpected = self._unexpected_in_attempt
        if unexpected:
            detail += f", {unexpected} other frames instead"
        decoder = self._decoder
        stale = decoder is not None and bool(
            decoder.held_noise or (decoder.held_frame and not self._frames_in_attempt)
        )
        if decoder is not None and stale:
            flushed = decoder.flush()
            if flushed is not None:
                self._count_garbage(flushed, self.endpoint.url())
                detail += f", {len(flushed.raw)} bytes that form no frame ({flushed.reason})"
        return AttemptFailed(detail, garbled=bool(unexpected) or stale)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = self._decoder = FrameDecoder()
        try:
            while True:
                try:
                    # not wait_for(): it can swallow a cancel that comes as the read completes,
                    # which under a flood is nearly always, and close() would wait on the flood
                    async with asyncio.timeout(
                        self._quiet if decoder.held_noise or decoder.held_frame else None
                    ):
                        chunk = await reader.read(READ_CHUNK)
                except TimeoutError:
                    flushed = decoder.flush()
                    if flushed is not None:
                        self._count_garbage(flushed, self.endpoint.url())
                        self._on_garbage(flushed)
                    continue
                if not chunk:
                    break
                first_garbage: Garbage | None = None
                for item in decoder.feed(chunk):
                    if isinstance(item, Garbage):
                        self._count_garbage(item, self.endpoint.url())
                        first_garbage = first_garbage or item
                    else:
                        self._dispatch(item)
                if first_garbage is not None:
                    self._on_garbage(first_garbage)  # after the frames: the reply may be among them
                # read() returns at once while the peer keeps the buffer full: let others run
                await asyncio.sleep(0)
        except OSError as exc:
            log.warning("anviz_tcp_read_failed", device=self.name, error=str(exc))
        log.info("anviz_tcp_closed", device=self.name)
        if self._waiter is not None and not self._waiter[1].done():
            self._waiter[1].set_exception(AttemptFailed("connection closed by the terminal", garbled=False))

    def _on_garbage(self, garbage: Garbage) -> None:
        if self._waiter is not None and not self._waiter[1].done():
            # our reply was probably in there: retry now rather than wait out the timeout
            self._waiter[1].set_exception(AttemptFailed(garbage.reason, garbled=True))

    def _dispatch(self, item: Request | Response) -> None:
        self._frames_in_attempt += 1
        if isinstance(item, Request) and item.command == CMD_HEARTBEAT:
            self._pong(item)
        elif isinstance(item, Response) and item.ack == ACK_REALTIME_RECORD:
            try:
                self.pushes.put_nowait(item)
            except asyncio.QueueFull:
                # the records stay on the terminal with their new flag: the next poll gets them
                self._warn("anviz_push_queue_full", raw=hex_preview(item.raw))
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
            self._unexpected_in_attempt += 1
            raw = item.raw if isinstance(item, Response) else item.encode()
            self._warn("anviz_unexpected_frame", raw=hex_preview(raw))

    def _pong(self, heartbeat: Request) -> None:
        writer = self._writer
        if writer is None:
            return
        if writer.transport.get_write_buffer_size() > PONG_BACKLOG:
            # a peer that sends heartbeats but reads nothing would fill our memory with pongs
            self.stats.unanswered_heartbeats += 1
            self._warn("anviz_heartbeat_unanswered", reason="the terminal is not reading")
            return
        writer.write(Response(heartbeat.device_id, ACK_PONG, RET_SUCCESS).encode())
