"""How much the HTTP server takes on at once, and for how long: its limits and timeouts.

A flood must never starve /healthz, the workers or the forwarder (docs/health.md, "HTTP"):

* at most `MAX_CONNECTIONS` connections held, the oldest idle one pushed out for a new one, and
  a request head within `HEADER_TIMEOUT` (`http_limits.ConnectionGuard`, which the server
  installs with these values); `BACKLOG` connections queued by the kernel;
* at most `MAX_REQUESTS` requests in progress (`MAX_HEALTHZ` for /healthz, counted apart); more
  get a quick 503 with `Retry-After` (`bounded_work`, which also marks the connection busy so
  the guard never pushes it out mid-answer);
* an idle connection is kept `IDLE_TIMEOUT` at most (each is closed after its answer anyway),
  and closing the server waits `SHUTDOWN_TIMEOUT` for answers already under way.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from punchgate.gateway.http_common import STATE, refuse

IDLE_TIMEOUT = 10.0  # seconds aiohttp keeps an idle connection (we close after each answer anyway)
HEADER_TIMEOUT = 5.0  # seconds from connect to a complete request line and headers
SHUTDOWN_TIMEOUT = 2.0  # seconds close() waits for requests already being answered
BACKLOG = 64  # connections the kernel queues for us; asyncio accepts up to this many at once
MAX_CONNECTIONS = 256  # held at once: several accept bursts, far below any RLIMIT_NOFILE
MAX_REQUESTS = 8  # in progress at once (all routes but /healthz); more: 503
MAX_HEALTHZ = 4  # /healthz requests in progress at once; more: 503


@web.middleware
async def bounded_work(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks the connection busy (the guard never pushes it out) and caps requests in progress."""
    state = request.app[STATE]
    kind, limit = ("healthz", MAX_HEALTHZ) if request.path == "/healthz" else ("api", MAX_REQUESTS)
    state.guard.request_started(request.protocol)
    try:
        if state.in_flight[kind] >= limit:
            state.limited.warning("http_busy", key=f"http_busy:{kind}", limit=limit, path=request.path)
            return refuse(503, "busy: too many requests at once; try again", **{"Retry-After": "1"})
        state.in_flight[kind] += 1
        try:
            return await handler(request)
        finally:
            state.in_flight[kind] -= 1
    finally:
        state.guard.request_finished(request.protocol)
