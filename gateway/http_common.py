"""What the HTTP API's handlers and middlewares share: their state, and how they answer.

`ApiState` (under `STATE` on the aiohttp application) holds the gateway, the API token or why
there is none, the connection guard, the host policy once the port is bound, the rate-limited
log, and the API's own threads: handlers query the store there (`in_thread`), never on the
event loop nor the default pool, and /healthz has a thread of its own so a flood of /metrics
never queues it. Answers are plain text (`refuse`: one sentence and a newline) or JSON;
`Refusal` lets a check deep inside a handler answer with its status and sentence.
`plain_answers`, the outermost middleware, turns every refusal, HTTP error and failure into
such a line (a failing handler is a rate-limited log line and a 500, never a traceback to the
client) and closes the connection after each answer. The make-up punch and push-command APIs
use the same helpers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from punchgate.gateway.http_limits import ConnectionGuard
from punchgate.gateway.http_security import HostPolicy, bearer_problem
from punchgate.gateway.ratelimit_log import RateLimitedLog

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

T = TypeVar("T")

API_THREADS = 2  # threads answering /metrics, /api/devices, replay and the console's pages
TEXT = "text/plain; charset=utf-8"
SEND_THE_TOKEN = "send Authorization: Bearer <the token in the gateway's token file>"


@dataclass
class ApiState:
    """What the middlewares and handlers share; the host policy is set once the port is bound."""

    gateway: Application
    token: str | None
    token_problem: str
    guard: ConnectionGuard
    limited: RateLimitedLog
    policy: HostPolicy | None = None
    api_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(API_THREADS, thread_name_prefix="http-api")
    )
    health_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="http-healthz")
    )
    in_flight: dict[str, int] = field(default_factory=lambda: {"healthz": 0, "api": 0})


STATE: web.AppKey[ApiState] = web.AppKey("api_state")


def reply(status: int, content_type: str, body: bytes, **headers: str) -> web.Response:
    # The header is set directly: aiohttp's content_type= argument refuses a charset.
    return web.Response(status=status, body=body, headers={"Content-Type": content_type, **headers})


def refuse(status: int, sentence: str, **headers: str) -> web.Response:
    return reply(status, TEXT, (sentence + "\n").encode(), **headers)


def json_answer(status: int, value: Any) -> web.Response:
    return reply(status, "application/json", json.dumps(value, ensure_ascii=False).encode())


async def in_thread(request: web.Request, work: Callable[[Application], T]) -> T:
    """Run a store query on the API's own threads (/healthz has its own), not the default pool."""
    state = request.app[STATE]
    pool = state.health_thread if request.path == "/healthz" else state.api_threads
    return await asyncio.get_running_loop().run_in_executor(pool, work, state.gateway)


class Refusal(Exception):
    """An answer of ours (status and sentence) from deep inside a handler."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; Refusal (415, 400) otherwise."""
    if request.content_type != "application/json":
        raise Refusal(
            415, f"{request.method} {request.path} takes a JSON body: send Content-Type: application/json"
        )
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, 'the body must be a JSON object such as {"since": "2026-11-20T06:00:00Z"}')
    return body


def token_for_reads(request: web.Request) -> None:
    """For a GET that shows what only the token's holders may see: Refusal (503, 401) unless the
    request carries the API token (the middleware checks it for state-changing requests only)."""
    state = request.app[STATE]
    if state.token is None:
        raise Refusal(503, f"the API token is not available: {state.token_problem}")
    problem = bearer_problem(request.headers.get("Authorization"), state.token)
    if problem:
        raise Refusal(401, f"{problem}: {SEND_THE_TOKEN}")


@web.middleware
async def plain_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as a short text line (`not found`) and one request per connection, as before."""
    try:
        response = await handler(request)
    except Refusal as refusal:
        response = refuse(refusal.status, refusal.sentence)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = reply(exc.status, "text/plain", f"{exc.reason.lower()}\n".encode())
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:
        request.app[STATE].limited.error(
            "http_handler_failed",
            key=f"http_handler_failed:{type(exc).__name__}",
            path=request.path,
            exc_info=True,
        )
        response = reply(500, "text/plain", b"internal error\n")
    response.force_close()
    return response
