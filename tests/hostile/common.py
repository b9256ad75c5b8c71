"""Pieces every hostile-peer test shares, whatever the protocol: peers that send what they like,
and the gauges that tell whether the gateway's process stayed healthy while they did.

    async with LoopHeartbeat() as beat: ...       # beat.max_gap: the longest the loop stalled
    rss = RssWatch(); ...; rss.growth_mb          # resident memory grown since RssWatch()
    with HostileTcpPeer(behaviour) as peer: ...   # a loopback TCP server on a free port
    with HostilePty(behaviour) as pty: ...        # a real pseudo-terminal; pty.path is the device

A behaviour is `async def behaviour(reader, writer)`: the peer's side of one connection (or of
the pty's master end) as asyncio streams. Each peer runs its own event loop in a thread, so the
attacker's work never counts against the loop under test, and every behaviour is cut off after
`max_seconds` so no attack outlives its test. Traffic stays on loopback and pseudo-terminals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import tty
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MAX_ATTACK_SECONDS = 30.0  # no behaviour runs longer than this, whatever it was told


def rss_bytes() -> int:
    """This process's resident memory (VmRSS in /proc/self/status), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssWatch:
    """Resident memory now, to compare with later."""

    def __init__(self) -> None:
        self.start = rss_bytes()

    @property
    def growth_mb(self) -> float:
        return (rss_bytes() - self.start) / (1024 * 1024)


class LoopHeartbeat:
    """A task on the running loop that wakes every `interval` seconds and records the longest gap
    between two wake-ups: how long anything else held the loop without yielding.

    `max_gap` is wall-clock time. On a machine shared with other busy processes (two cores for
    everyone here), a gap also holds time in which this process was not running at all;
    `max_own_gap` leaves that out: it counts a gap only up to the interval plus the CPU time the
    process (all its threads: the loop's, the peers', the serial workers') used meanwhile. That
    is the gap as it would be with a core to spare: code in this process that holds the loop or
    the GIL still counts in full, in CPU seconds. `slowdown()` says how late the beats came on
    average (1.0: on time); a wall-clock budget for a call that mostly waits scales by it, since
    a machine that runs the process a fifth of the time makes each wait about five times longer.
    (What none of them sees: a blocking system call on the loop's thread. The code under test
    here makes none; the serial link's blocking calls run in worker threads.)
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.max_gap = 0.0
        self.max_own_gap = 0.0
        self.beats = 0
        self._start = self._last = self._last_cpu = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._start = self._last = time.monotonic()
        self._last_cpu = time.process_time()
        self._task = asyncio.create_task(self._run(), name="loop-heartbeat")
        await asyncio.sleep(0)  # let it take its first beat
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def slowdown(self) -> float:
        """The mean gap between beats over the interval asked for, at least 1."""
        beats = self.beats + 1  # the one under way counts, with what it has waited so far
        return max(1.0, (time.monotonic() - self._start) / (beats * self.interval))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now, cpu = time.monotonic(), time.process_time()
            gap = now - self._last
            self.max_gap = max(self.max_gap, gap)
            self.max_own_gap = max(self.max_own_gap, min(gap, self.interval + cpu - self._last_cpu))
            self.beats += 1
            self._last, self._last_cpu = now, cpu


async def send_for(
    writer: asyncio.StreamWriter,
    chunk: Callable[[], bytes],
    *,
    seconds: float,
    max_bytes: int,
    pause: float = 0.0,
) -> int:
    """Write `chunk()` again and again, `pause` seconds apart, until `seconds` have passed or
    `max_bytes` were sent (or the other side has gone). Returns the bytes sent."""
    sent = 0
    deadline = time.monotonic() + seconds
    with contextlib.suppress(ConnectionError, OSError):
        while sent < max_bytes and time.monotonic() < deadline:
            data = chunk()
            writer.write(data)
            sent += len(data)
            await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.monotonic()))
            if pause:
                await asyncio.sleep(pause)
    return sent


class _PeerThread:
    """An event loop in a daemon thread that runs behaviours until `stop()`."""

    def __init__(self, behaviour: Behaviour, *, max_seconds: float) -> None:
        self.behaviour = behaviour
        self.max_seconds = min(max_seconds, MAX_ATTACK_SECONDS)
        self.connections = 0
        self.errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    def _start_thread(self) -> None:
        self._thread.start()

    def _call(self, coro: Awaitable[object], timeout: float = 10.0) -> object:
        async def wrap() -> object:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    async def _run_behaviour(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.wait_for(self.behaviour(reader, writer), self.max_seconds)
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a broken attack must fail the test, not vanish
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _stop_thread(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class HostileTcpPeer(_PeerThread):
    """A TCP server on a free loopback port; every connection gets `behaviour`.

    `receive_buffer` shrinks the kernel's receive buffer of the peer's sockets, so that a peer
    that stops reading pushes back on the sender after a few kilobytes rather than megabytes.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        max_seconds: float = MAX_ATTACK_SECONDS,
        receive_buffer: int | None = None,
    ) -> None:
        super().__init__(behaviour, max_seconds=max_seconds)
        self.host = "127.0.0.1"
        self.port = 0
        self._receive_buffer = receive_buffer
        self._server: asyncio.Server | None = None

    def start(self) -> Self:
        self._start_thread()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self._receive_buffer is not None:
            # before listen(), so that accepted sockets inherit it and the window starts small
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer)
        listener.bind((self.host, 0))
        listener.listen()
        self.port = listener.getsockname()[1]

        async def serve() -> None:
            self._server = await asyncio.start_server(self._run_behaviour, sock=listener)

        self._call(serve())
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(Exception):
            self._call(close())
        self._stop_thread()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HostilePty(_PeerThread):
    """A real pseudo-terminal: the code under test opens `path`, `behaviour` plays the far end."""

    def __init__(self, behaviour: Behaviour, *, max_seconds: float = MAX_ATTACK_SECONDS) -> None:
        super().__init__(behaviour, max_seconds=max_seconds)
        self.path = ""
        self._master = self._slave = -1

    def start(self) -> Self:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary bytes pass untouched, nothing echoes
        self.path = os.ttyname(self._slave)
        self._start_thread()
        self._call(self._open_streams())
        return self

    async def _open_streams(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        read_end = os.fdopen(os.dup(self._master), "rb", buffering=0)
        write_end = os.fdopen(os.dup(self._master), "wb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_end)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), write_end
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._tasks.add(loop.create_task(self._run_behaviour(reader, writer)))

    def stop(self) -> None:
        self._stop_thread()
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
