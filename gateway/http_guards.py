"""The middlewares that decide whether a request reaches a handler: Host/Origin, token, body.

* every request: Host and Origin must be this gateway's (`http_security.HostPolicy`), or 403;
  that defeats DNS rebinding and cross-site requests;
* state-changing requests to a known API route: `Authorization: Bearer <token>` from the token
  file (`punchgate.gateway.token`), compared in constant time, or an admin's console session
  with its CSRF token in `X-CSRF-Token`, or 401 (503 when there is no token to compare with).
  The console's own forms check their session and CSRF token themselves, and reads and 404/405
  answers need no token;
* a body: at most `MAX_BODY` bytes (413), arriving within `BODY_TIMEOUT` (408), read here
  before any handler runs, since aiohttp checks the size only when a handler reads it.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from punchgate.gateway.console import web as console_web
from punchgate.gateway.http_common import SEND_THE_TOKEN, STATE, refuse
from punchgate.gateway.http_security import bearer_problem

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024  # bytes; a replay request is a few dozen
BODY_TIMEOUT = 5.0  # seconds to receive a declared body
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def own_host_and_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 unless Host (and Origin, when sent) name this gateway: see http_security."""
    state = request.app[STATE]
    if state.policy is None:
        return refuse(503, "starting")
    hosts, origins = request.headers.getall("Host", []), request.headers.getall("Origin", [])
    problem = "more than one Host or Origin header" if len(hosts) > 1 or len(origins) > 1 else None
    problem = problem or state.policy.host_problem(hosts[0] if hosts else None)
    problem = problem or state.policy.origin_problem(origins[0] if origins else None)
    if problem:
        state.limited.warning(
            "http_foreign_request", key="http_foreign_request", problem=problem, path=request.path
        )
        return refuse(403, problem)
    return await handler(request)


@web.middleware
async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """State-changing requests to a known API route need the API token or an admin's console
    session (401 otherwise); the console's own forms check their session and CSRF token."""
    if request.method not in STATE_CHANGING or request.match_info.http_exception is not None:
        return await handler(request)  # reads, and 404/405 answers, need no token
    if console_web.is_console_route(request):
        return await handler(request)
    state = request.app[STATE]
    if not (state.token and bearer_problem(request.headers.get("Authorization"), state.token) is None):
        admin = await console_web.api_admin(request)
        if admin is not None:
            log.info("api_request_by_account", account=admin, path=request.path)
            return await handler(request)
    if state.token is None:
        return refuse(
            503, f"the API token is not available, so nothing can be changed: {state.token_problem}"
        )
    problem = bearer_problem(request.headers.get("Authorization"), state.token)
    if problem:
        state.limited.warning(
            "http_auth_failed", key=f"http_auth_failed:{problem}", problem=problem, path=request.path
        )
        return refuse(
            401,
            f"{problem}: {SEND_THE_TOKEN}",
            **{"WWW-Authenticate": 'Bearer realm="punchgate"'},
        )
    return await handler(request)


@web.middleware
async def bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 for a body over client_max_size, 408 for one that does not arrive in BODY_TIMEOUT.
    aiohttp checks the size only when a handler reads the body, so read it here, before any
    handler runs. It stays cached for request.read()."""
    if request.body_exists:
        limit = request.client_max_size
        declared = request.content_length
        if declared is not None and declared > limit:
            raise web.HTTPRequestEntityTooLarge(limit, declared)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                await request.read()  # raises the 413 itself for a chunked body that runs over
        except TimeoutError:
            return refuse(408, f"the body did not arrive within {BODY_TIMEOUT:g} s")
    return await handler(request)
