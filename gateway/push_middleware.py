"""The push listener's middlewares: bounded work, bounded bodies, errors as one line of text.

They run in this order on every request, before the receiver's handlers:

* `plain_answers`: an error is one short text line (push terminals show nothing else, and a
  person reading a capture needs the sentence); a handler that fails is a 500 and one
  rate-limited log line; the connection is closed after any error;
* `bounded_work`: marks the connection busy, so the connection guard never pushes it out, and
  answers 503 (`Retry-After: 5`) when `max_requests` requests are in progress already;
* `bounded_body`: 413 for a body over the listener's limit, declared or not, and 408 for one
  that does not arrive within `body_timeout`. The body is read here, before any handler runs,
  and stays cached for `request.read()`.

The limits live in a `RequestLimits` the listener stores in its application under `LIMITS`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from punchgate.gateway.http_limits import ConnectionGuard
from punchgate.gateway.ratelimit_log import RateLimitedLog


@dataclass(eq=False)
class RequestLimits:
    """What the middlewares enforce and count for one listener."""

    guard: ConnectionGuard
    limited: RateLimitedLog
    max_requests: int  # in progress at once
    body_timeout: float  # seconds to receive a declared body
    in_flight: int = 0


LIMITS: web.AppKey[RequestLimits] = web.AppKey("push_limits", RequestLimits)


@web.middleware
async def plain_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as one short text line; a handler that fails is a 500 and one rate-limited log line."""
    limits = request.app[LIMITS]
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = (
            exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else f"{exc.reason.lower()}\n"
        )
        response = web.Response(status=exc.status, text=text, content_type="text/plain")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:
        limits.limited.error(
            "push_handler_failed",
            key=f"push_handler_failed:{type(exc).__name__}",
            path=request.path,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=True,
        )
        response = web.Response(status=500, text="internal error\n", content_type="text/plain")
    response.force_close()  # after an error, start afresh
    return response


@web.middleware
async def bounded_work(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks the connection busy (the guard never pushes it out) and caps requests in progress."""
    limits = request.app[LIMITS]
    limits.guard.request_started(request.protocol)
    try:
        if limits.in_flight >= limits.max_requests:
            limits.limited.warning("push_busy", key="push_busy", limit=limits.max_requests, path=request.path)
            response = web.Response(
                status=503, text="busy: too many requests at once; try again\n", content_type="text/plain"
            )
            response.headers["Retry-After"] = "5"
            response.force_close()
            return response
        limits.in_flight += 1
        try:
            return await handler(request)
        finally:
            limits.in_flight -= 1
    finally:
        limits.guard.request_finished(request.protocol)


@web.middleware
async def bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 for a body over the limit (declared or not), 408 for one that does not arrive in time.
    Read here, before any handler runs; it stays cached for request.read()."""
    if request.body_exists:
        limit = request.client_max_size
        declared = request.content_length
        if declared is not None and declared > limit:
            raise web.HTTPRequestEntityTooLarge(limit, declared)
        body_timeout = request.app[LIMITS].body_timeout
        try:
            async with asyncio.timeout(body_timeout):
                await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"the body did not arrive within {body_timeout:g} s\n"
            ) from None
    return await handler(request)


MIDDLEWARES = (plain_answers, bounded_work, bounded_body)
