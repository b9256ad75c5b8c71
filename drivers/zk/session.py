"""One ZK session (connect, blocking calls, close) and the bounded thread pool every session shares.

pyzk blocks, so each of its calls runs in one module-wide pool of threads sized once for the
process (`configure_pool`), never one thread per terminal. `ZkSession.run` bounds every call
by an overall deadline, which binds the pool thread's own reads (`link`), and turns whatever
it raised into the driver's errors (`errors`). When the caller is cancelled, or the thread
is not back shortly after the deadline, the call is aborted: the pool thread's wait ends (at
once over TCP, where the socket is shut down; within `link.ABORT_POLL` over UDP) and the
thread finishes; the socket is closed only after that, and its outcome collected. The
session is then out of step (`desynced`): its replies can no longer be matched, so it is
closed without the goodbye and the next connect starts over.

A terminal allows one session at a time, so a process holds at most one per address.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import structlog

from punchgate.drivers.base import (
    DriverError,
    DriverTimeoutError,
    ProtocolError,
    UnreachableError,
    UnsupportedDeviceError,
)
from punchgate.drivers.zk.arenas import limit_arenas
from punchgate.drivers.zk.client import ZkClient
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.errors import CountMismatchError, map_error

log = structlog.get_logger(__name__)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------
# The shared thread pool
# ---------------------------------------------------------------------------------------

DEFAULT_POOL_SIZE: Final = 32
# How long past its deadline a call may take to come back once aborted (it is woken at once).
ABORT_GRACE: Final = 1.0
_pool: ThreadPoolExecutor | None = None
_pool_size = DEFAULT_POOL_SIZE
_pool_guard = threading.Lock()


def configure_pool(max_workers: int) -> None:
    """Set the size of the pool every ZK driver shares (call before the first connect)."""
    global _pool, _pool_size
    if max_workers < 1:
        raise ValueError("the ZK thread pool needs at least one worker")
    with _pool_guard:
        old, _pool, _pool_size = _pool, None, max_workers
    if old is not None:
        old.shutdown(wait=False)


def shutdown_pool() -> None:
    """The gateway is stopping: calls still queued in the pool never start (their callers see
    a cancellation); calls running finish, each under its deadline. Without it the sessions'
    goodbyes queued at shutdown, one per terminal, each ran at the interpreter's exit, which
    joins the pool: a daemon of 5,000 terminals took two minutes to exit. A later call (an
    application started again in the same process) gets a new pool."""
    global _pool
    with _pool_guard:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_guard:
        if _pool is None:
            limit_arenas()  # before the pool's threads each take an arena of glibc's (`arenas`)
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="zk")
        return _pool


def _collect(future: asyncio.Future[Any]) -> None:
    """Retrieve a finished call's outcome: an abandoned call's error is not worth a warning.

    A call abandoned by its caller (cancelled, or past its deadline) still ends in its pool
    thread, often with the error the abort caused; asyncio would otherwise log it as "Future
    exception was never retrieved", long after the fact (at shutdown, say).
    """
    if not future.cancelled():
        future.exception()


# ---------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------

# One session per terminal in this process: a second driver for the same address would
# knock the first one's session off (terminals allow one at a time).
_owners: dict[tuple[str, int, str], str] = {}


class ZkSession:
    """The connection of one terminal: its pyzk client, whether it is in step, who holds it."""

    def __init__(self, config: ZkTerminal) -> None:
        self.config = config
        self.name = config.name
        self.timeout = config.timeout
        self.client: ZkClient | None = None
        self.desynced = False  # after a timeout or garbage the stream position is unknown
        self.live_active = False  # the live stream owns the socket; no command may be sent
        self._inflight: asyncio.Future[Any] | None = None  # the call running in the pool, if any
        self._comm_key = int(config.comm_key.get_secret_value()) if config.comm_key else 0
        self._owner_key = (config.host, config.port, config.transport)

    @property
    def udp(self) -> bool:
        return self.config.transport == "udp"

    def current(self) -> ZkClient:
        """The connected client, for one command; DriverError when there is none to use."""
        if self.client is None or not self.client.is_connect:
            raise DriverError("not connected", device=self.name)
        if self.live_active:
            raise DriverError("a command was sent while live() is open; aclose() it first", device=self.name)
        return self.client

    def abort(self) -> None:
        """Give up on the call in flight: flag it and shut its socket down (from the event loop).

        The pool thread waiting on the terminal wakes up, sees the flag and raises; the socket
        is closed only once that thread is out (`_teardown`), so its descriptor cannot be
        reused under it.
        """
        self.desynced = True
        if self.client is not None:
            self.client.link.abort()

    async def run(
        self, what: str, call: Callable[[], T], *, deadline: float | None = None, connecting: bool = False
    ) -> T:
        """Run one blocking pyzk call in the shared pool, bounded by an overall deadline.

        The deadline binds the thread itself: every recv it makes ends by then (`link`),
        with the reason (TooSlow, silence, a bound broken). Should the thread still not be
        back ABORT_GRACE later, or should the caller be cancelled, the call is aborted;
        its outcome is collected whenever the thread ends, so nothing is left unretrieved.
        """

        abandoned = False  # set by the caller that gave up: a call still queued must not start

        def guarded() -> T:
            if abandoned:
                # Queued behind the pool's other calls and given up before it started: at
                # shutdown, thousands of sessions' goodbyes would otherwise each talk to their
                # terminal while the interpreter's exit joins the pool (over 30 s at 1,000).
                raise DriverTimeoutError(f"{what}: given up before it started", device=self.name)
            try:
                return call()
            except DriverError:
                raise
            except Exception as exc:
                raise map_error(
                    exc, device=self.name, what=what, connecting=connecting, udp=self.udp
                ) from exc

        if self._inflight is not None and not self._inflight.done():
            raise DriverTimeoutError(
                f"{what}: an abandoned call to the terminal is still running", device=self.name
            )
        limit = deadline if deadline is not None else self.timeout * 3 + 5
        if self.client is not None:
            self.client.link.begin(limit)
        future = asyncio.get_running_loop().run_in_executor(_executor(), guarded)
        future.add_done_callback(_collect)
        future.add_done_callback(self._forget)
        self._inflight = future
        try:
            async with asyncio.timeout(limit + ABORT_GRACE):  # never swallows a cancellation
                return await asyncio.shield(future)
        except TimeoutError:
            # `guarded` maps its own errors, so a TimeoutError here is our deadline: the
            # thread is stuck outside a recv (name resolution, say). Wake it, give it a moment.
            abandoned = True
            self.abort()
            await asyncio.wait({future}, timeout=ABORT_GRACE)
            cls = UnreachableError if connecting and self.udp else DriverTimeoutError
            raise cls(f"{what}: no answer within {limit:.0f} s", device=self.name) from None
        except asyncio.CancelledError:
            abandoned = True
            self.abort()
            raise
        except DriverError as exc:
            if isinstance(exc, DriverTimeoutError | UnsupportedDeviceError) or (
                isinstance(exc, ProtocolError) and not isinstance(exc, CountMismatchError)
            ):
                self.desynced = True
            raise

    def _forget(self, future: asyncio.Future[Any]) -> None:
        """A finished call is no longer in flight: drop it, and with it its result (a tail
        read's records) or its error (with the traceback's frames), which the session held
        otherwise until its next call, about 1.5 KB a terminal between polls (issue 18)."""
        if self._inflight is future:
            self._inflight = None

    async def open(self) -> None:
        """Close any previous session, then CONNECT (and AUTH) a new one."""
        await self.close()
        holder = _owners.get(self._owner_key)
        if holder is not None and holder != self.name:
            raise DriverError(
                f"{self.config.host}:{self.config.port} already has a session (terminal {holder!r})",
                device=self.name,
            )
        client = ZkClient(
            host=self.config.host,
            port=self.config.port,
            udp=self.udp,
            comm_key=self._comm_key,
            timeout=self.timeout,
            encoding=self.config.encoding,
        )
        self.desynced = False
        _owners[self._owner_key] = self.name
        self.client = client
        self._inflight = None  # a call abandoned on the previous client finishes on its own
        try:
            await self.run(
                f"connect {self.config.transport}://{self.config.host}:{self.config.port}",
                client.connect,
                deadline=self.timeout * 2 + 5,
                connecting=True,
            )
        except BaseException:
            await self._teardown()
            raise
        log.info("zk_connected", device=self.name, transport=self.config.transport, host=self.config.host)

    async def close(self) -> None:
        """End the session: re-enable the terminal and say goodbye, then close the socket.

        Re-enabling on every close means a terminal left disabled (by us after a crash, or
        by another tool) is usable again after our next contact. An out-of-step session is
        not talked to: the socket is just closed.
        """
        client = self.client
        if client is None:
            return
        self.live_active = False
        try:
            if client.is_connect and not self.desynced:
                short = min(self.timeout, 5.0)

                def goodbye() -> None:
                    client.set_timeout(short)
                    try:
                        client.enable_device()
                    finally:
                        client.disconnect()

                await self.run("close", goodbye, deadline=short * 2 + 2)
        except DriverError as exc:
            log.warning("zk_close_failed", device=self.name, error=str(exc))
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        client, self.client = self.client, None
        if _owners.get(self._owner_key) == self.name:
            del _owners[self._owner_key]
        if client is None:
            return
        client.is_connect = False
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            # A pool thread still uses the socket: wake it, and close once it is out.
            client.link.abort()
            inflight.add_done_callback(lambda _: client.link.close())
        else:
            client.link.close()
