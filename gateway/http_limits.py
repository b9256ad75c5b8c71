"""What keeps a flood of connections from starving /healthz or the daemon's file descriptors.

* **A cap on open connections** (`ConnectionGuard`). aiohttp accepts every connection and keeps
  it until it sends a request. The guard watches aiohttp's connection bookkeeping
  (`web.Server.connection_made` / `connection_lost`) and holds at most `max_connections`: the
  next one pushes out the oldest connection that has no request in progress (a half-open or
  idle one), so a client that connects and asks at once — /healthz from a monitor — still gets
  in while 1,000 silent sockets wait. Only when every held connection is busy answering a
  request is the newcomer refused with a quick 503.
* **A deadline for the request head.** A connection that has not delivered a complete request
  line and headers within `header_timeout` is closed, whatever the aiohttp version does about
  it (its own idle timer only covers this from 3.14 or so).
* **File descriptors.** `raise_open_files_limit` lifts the soft RLIMIT_NOFILE to the hard limit
  at start-up; with the cap above, HTTP can never use more than `max_connections` of them, so
  terminals, the buffer and the broker connection always find one.
* **Quiet logs.** aiohttp logs every malformed request as an ERROR with a traceback
  (`aiohttp.server`). `quiet_aiohttp_loggers` turns those into one rate-limited warning line
  with a count (`RateLimitedLog`), so a scanner cannot fill the journal.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from punchgate.gateway.ratelimit_log import RateLimitedLog

log = structlog.get_logger(__name__)

BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 35\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy: too many connections at once\n"
)


@dataclass
class _Connection:
    transport: asyncio.Transport
    timer: asyncio.TimerHandle | None
    busy: bool = False
    asked: bool = False  # a request head arrived at least once


class ConnectionGuard:
    """Caps the connections one aiohttp server holds; see the module docstring."""

    def __init__(self, *, max_connections: int, header_timeout: float, limited: RateLimitedLog) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._limited = limited
        self._held: OrderedDict[RequestHandler, _Connection] = OrderedDict()  # oldest first
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    @property
    def open_connections(self) -> int:
        return len(self._held)

    def install(self, server: web.Server) -> None:
        """Hook into the server's own connection bookkeeping (it calls these for every socket)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._opened(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._closed(handler)
            lost(handler, exc)

        # aiohttp offers no public hook for this; the two methods are its stable protocol between
        # RequestHandler and Server (RequestHandler calls self._manager.connection_made/lost).
        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _opened(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._held) >= self.max_connections and not self._evict_one():
            self.refused += 1
            self._limited.warning("http_connection_refused", held=len(self._held), refused=self.refused)
            transport.write(BUSY_ANSWER)
            transport.close()
            return
        timer = asyncio.get_running_loop().call_later(self.header_timeout, self._head_overdue, handler)
        self._held[handler] = _Connection(transport, timer)

    def _evict_one(self) -> bool:
        for victim, connection in self._held.items():
            if not connection.busy:
                self.evicted += 1
                self._limited.warning(
                    "http_connection_evicted",
                    reason=f"over {self.max_connections} open connections; the oldest idle one goes",
                    evicted=self.evicted,
                )
                self._drop(victim)
                return True
        return False

    def _head_overdue(self, handler: RequestHandler) -> None:
        connection = self._held.get(handler)
        if connection is None or connection.busy or connection.asked:
            return
        self.timed_out += 1
        self._limited.warning(
            "http_request_head_timeout",
            reason=f"no complete request within {self.header_timeout:g} s",
            timed_out=self.timed_out,
        )
        self._drop(handler)

    def _drop(self, handler: RequestHandler) -> None:
        connection = self._held.pop(handler, None)
        if connection is None:
            return
        if connection.timer is not None:
            connection.timer.cancel()
        connection.transport.abort()  # nothing to say to a client that never asked

    def _closed(self, handler: RequestHandler) -> None:
        connection = self._held.pop(handler, None)
        if connection is not None and connection.timer is not None:
            connection.timer.cancel()

    def request_started(self, handler: RequestHandler) -> None:
        connection = self._held.get(handler)
        if connection is not None:
            connection.busy = connection.asked = True
            if connection.timer is not None:
                connection.timer.cancel()
                connection.timer = None

    def request_finished(self, handler: RequestHandler) -> None:
        connection = self._held.get(handler)
        if connection is not None:
            connection.busy = False


def raise_open_files_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; (soft, hard) as they are afterwards.

    A failure (a seccomp filter, a container) is logged, not raised: the daemon still works
    within the old limit, and the HTTP cap keeps it from running out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("open_files_limit_unchanged", soft=soft, hard=hard, error=str(exc))
        return soft, hard
    log.info("open_files_limit_raised", soft_was=soft, soft=target, hard=hard)
    return target, hard


class _AiohttpRecords(logging.Filter):
    """Turns aiohttp's per-request error records into rate-limited warnings without tracebacks."""

    def __init__(self, limited: RateLimitedLog) -> None:
        super().__init__("punchgate-quiet-aiohttp")
        self.limited = limited

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        kind = type(exc).__name__ if exc is not None else "none"
        fields: dict[str, Any] = {"error": kind, "detail": str(exc)[:200] if exc is not None else ""}
        if isinstance(exc, http_exceptions.HttpProcessingError):
            self.limited.warning("http_bad_request", key=f"http_bad_request:{kind}", **fields)
        else:
            message = record.getMessage()[:200]
            self.limited.error(
                "http_server_error", key=f"http_server_error:{kind}", message=message, **fields
            )
        return False


def quiet_aiohttp_loggers(limited: RateLimitedLog) -> None:
    """Route aiohttp's server and access loggers through `limited` (once per process)."""
    for name in ("aiohttp.server", "aiohttp.access", "aiohttp.web"):
        logger = logging.getLogger(name)
        for existing in list(logger.filters):
            if isinstance(existing, _AiohttpRecords):
                logger.removeFilter(existing)
        logger.addFilter(_AiohttpRecords(limited))
