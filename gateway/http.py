"""The daemon's HTTP server: /metrics, /healthz, /api/devices, POST /api/replay and the console.

Built on aiohttp.web. It serves from the daemon's own asyncio loop, not from a thread or a second
loop, so /healthz answering at all still proves that loop is alive. One maintained library gives
both the server and a client (for what the gateway will call over HTTP), and its middlewares are
where the authentication and size limits go. It bounds the request line, headers and body
(`client_max_size`) itself. Starlette would have needed uvicorn on top, which runs its own
server loop.

Safe against web pages and floods (docs/health.md, "HTTP"):

* every request: Host and Origin must be this gateway's (`http_security.HostPolicy`), or 403;
  that defeats DNS rebinding and cross-site requests;
* state-changing requests (POST) to the API: `Authorization: Bearer <token>` from the token file
  (`punchgate.gateway.token`), compared in constant time, or an admin's console session with its
  CSRF token in `X-CSRF-Token`, or 401; a JSON body
  (`Content-Type: application/json`), or 415; its fields checked, or 400 naming the problem;
* floods: at most `MAX_CONNECTIONS` connections held, the oldest idle one pushed out for a new
  one; a request head within `HEADER_TIMEOUT`, a body within `BODY_TIMEOUT`
  (`http_limits.ConnectionGuard`); at most `MAX_REQUESTS` requests in progress (`MAX_HEALTHZ`
  for /healthz, counted apart), more get a quick 503; handlers query the store on the API's
  own threads, so a flood of /metrics never queues /healthz, the workers or the forwarder
  behind it; malformed requests are a rate-limited warning, not a traceback each.

The console's pages (`punchgate.gateway.console.web`, docs/console.md) check their own
sessions and CSRF tokens, behind the same middlewares; its routes are added by
`console.web.add_routes`. With `[http] tls_cert_file` and `tls_key_file` the server speaks
HTTPS only.

Every route is in `ROUTES` (the make-up punches' in `manual_api.ROUTES`, the push-terminal
commands' in `push_commands_api.ROUTES`) and every
middleware in `MIDDLEWARES`. One request per connection
(`Connection: close`) and plain-text errors. A wrong method on a known path is 405, an unknown
path 404, whatever the method; a malformed request 400, a handler that fails 500.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from punchgate.gateway.console import web as console_web
from punchgate.gateway.http_limits import ConnectionGuard, quiet_aiohttp_loggers, raise_open_files_limit
from punchgate.gateway.http_security import HostPolicy, bearer_problem
from punchgate.gateway.logs import register_secret
from punchgate.gateway.metrics import render_metrics
from punchgate.gateway.ratelimit_log import RateLimitedLog
from punchgate.gateway.status import gateway_status, health_verdict
from punchgate.gateway.token import TokenError, ensure_token

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_BODY = 64 * 1024  # bytes; a replay request is a few dozen
IDLE_TIMEOUT = 10.0  # seconds aiohttp keeps an idle connection (we close after each answer anyway)
HEADER_TIMEOUT = 5.0  # seconds from connect to a complete request line and headers
BODY_TIMEOUT = 5.0  # seconds to receive a declared body
SHUTDOWN_TIMEOUT = 2.0  # seconds close() waits for requests already being answered
BACKLOG = 64  # connections the kernel queues for us; asyncio accepts up to this many at once
MAX_CONNECTIONS = 256  # held at once: several accept bursts, far below any RLIMIT_NOFILE
MAX_REQUESTS = 8  # in progress at once (all routes but /healthz); more: 503
MAX_HEALTHZ = 4  # /healthz requests in progress at once; more: 503
API_THREADS = 2  # threads answering /metrics, /api/devices, replay and the console's pages
EARLIEST_SINCE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # no gateway delivered punches before this
FUTURE_SLACK = 60.0  # seconds a `since` may lie ahead of our clock (the caller's clock may be ahead)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

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


def _reply(status: int, content_type: str, body: bytes, **headers: str) -> web.Response:
    # The header is set directly: aiohttp's content_type= argument refuses a charset.
    return web.Response(status=status, body=body, headers={"Content-Type": content_type, **headers})


def _refuse(status: int, sentence: str, **headers: str) -> web.Response:
    return _reply(status, TEXT, (sentence + "\n").encode(), **headers)


def _json_answer(status: int, value: Any) -> web.Response:
    return _reply(status, "application/json", json.dumps(value, ensure_ascii=False).encode())


async def _in_thread(request: web.Request, work: Callable[[Application], T]) -> T:
    """Run a store query on the API's own threads (/healthz has its own), not the default pool."""
    state = request.app[STATE]
    pool = state.health_thread if request.path == "/healthz" else state.api_threads
    return await asyncio.get_running_loop().run_in_executor(pool, work, state.gateway)


async def _metrics(request: web.Request) -> web.Response:
    body = await _in_thread(request, render_metrics)
    return _reply(200, "text/plain; version=0.0.4; charset=utf-8", body)


async def _healthz(request: web.Request) -> web.Response:
    healthy, reason = await _in_thread(request, health_verdict)
    return _reply(200 if healthy else 503, TEXT, (reason + "\n").encode())


async def _api_devices(request: web.Request) -> web.Response:
    status = await _in_thread(request, gateway_status)
    return _reply(200, "application/json", json.dumps(status, default=str).encode())


def _iso(when: float) -> str:
    try:
        return dt.datetime.fromtimestamp(when, dt.UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{when:g}"


def _since_value(value: Any) -> float:
    """A JSON `since` as unix time: an ISO 8601 string (UTC if no offset) or a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("since must be an ISO 8601 time such as 2026-11-20T06:00:00Z or a unix time")
    if not isinstance(value, str):
        return float(value)
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            return float(value)
        except ValueError:
            raise ValueError(
                f"since {value[:60]!r} is not an ISO 8601 time such as 2026-11-20T06:00:00Z, nor a unix time"
            ) from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def parse_since(value: Any, *, now: float, retention_days: float) -> float:
    """`since` as unix time, or ValueError with the sentence the caller gets back (400)."""
    since = _since_value(value)
    if not math.isfinite(since):
        raise ValueError(f"since must be a finite time, not {since}")
    if since < EARLIEST_SINCE.timestamp():
        raise ValueError(f"since {_iso(since)} is before 2000: no punch can have been delivered then")
    if since > now + FUTURE_SLACK:
        raise ValueError(f"since {_iso(since)} is in the future (the gateway's clock says {_iso(now)})")
    earliest = now - retention_days * 86400
    if since < earliest:
        raise ValueError(
            f"since {_iso(since)} is older than the buffer keeps delivered punches "
            f"([buffer] retention_days = {retention_days:g}): the earliest is {_iso(earliest)}"
        )
    return since


class _Refusal(Exception):
    """An answer of ours (status and sentence) from deep inside a handler."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; _Refusal (415, 400) otherwise."""
    if request.content_type != "application/json":
        raise _Refusal(
            415, f"{request.method} {request.path} takes a JSON body: send Content-Type: application/json"
        )
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise _Refusal(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Refusal(400, 'the body must be a JSON object such as {"since": "2026-11-20T06:00:00Z"}')
    return body


def _token_for_reads(request: web.Request) -> None:
    """For a GET that shows what only the token's holders may see: _Refusal (503, 401) unless the
    request carries the API token (the middleware checks it for state-changing requests only)."""
    state = request.app[STATE]
    if state.token is None:
        raise _Refusal(503, f"the API token is not available: {state.token_problem}")
    problem = bearer_problem(request.headers.get("Authorization"), state.token)
    if problem:
        raise _Refusal(401, f"{problem}: {SEND_THE_TOKEN}")


async def _replay(request: web.Request) -> web.Response:
    """POST /api/replay {"since": TIME, "device": NAME or null}: send delivered punches again."""
    app = request.app[STATE].gateway
    body = await _json_object(request)
    unknown = sorted(set(body) - {"since", "device"})
    if unknown:
        return _refuse(400, f"unknown key {unknown[0]!r} (expected since and device)")
    if "since" not in body:
        return _refuse(400, 'since is required, e.g. {"since": "2026-11-20T06:00:00Z"}')
    try:
        since = parse_since(
            body["since"],
            now=dt.datetime.now(dt.UTC).timestamp(),
            retention_days=app.settings.buffer.retention_days,
        )
    except ValueError as exc:
        return _refuse(400, str(exc))
    device = body.get("device") or None  # null or "" means every terminal
    if device is not None and not isinstance(device, str):
        return _refuse(400, "device must be a terminal name or null")
    if device is not None and device not in app.devices:
        return _refuse(404, f"no terminal named {device!r}")
    if app.store is None or app.forwarder is None:
        return _refuse(503, "starting")
    store = app.store
    count = await _in_thread(request, lambda _app: store.requeue_delivered(since=since, device=device))
    app.forwarder.rewind()
    log.info("replay_requested", since=_iso(since), device=device, requeued=count)
    return _reply(200, "application/json", json.dumps({"requeued": count}).encode())


# GET routes answer HEAD too (headers only).
ROUTES = [
    web.get("/metrics", _metrics),
    web.get("/healthz", _healthz),
    web.get("/api/devices", _api_devices),
    web.post("/api/replay", _replay),
]


@web.middleware
async def _plain_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as a short text line (`not found`) and one request per connection, as before."""
    try:
        response = await handler(request)
    except _Refusal as refusal:
        response = _refuse(refusal.status, refusal.sentence)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _reply(exc.status, "text/plain", f"{exc.reason.lower()}\n".encode())
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:
        request.app[STATE].limited.error(
            "http_handler_failed",
            key=f"http_handler_failed:{type(exc).__name__}",
            path=request.path,
            exc_info=True,
        )
        response = _reply(500, "text/plain", b"internal error\n")
    response.force_close()
    return response


@web.middleware
async def _bounded_work(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks the connection busy (the guard never pushes it out) and caps requests in progress."""
    state = request.app[STATE]
    kind, limit = ("healthz", MAX_HEALTHZ) if request.path == "/healthz" else ("api", MAX_REQUESTS)
    state.guard.request_started(request.protocol)
    try:
        if state.in_flight[kind] >= limit:
            state.limited.warning("http_busy", key=f"http_busy:{kind}", limit=limit, path=request.path)
            return _refuse(503, "busy: too many requests at once; try again", **{"Retry-After": "1"})
        state.in_flight[kind] += 1
        try:
            return await handler(request)
        finally:
            state.in_flight[kind] -= 1
    finally:
        state.guard.request_finished(request.protocol)


@web.middleware
async def _own_host_and_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 unless Host (and Origin, when sent) name this gateway: see http_security."""
    state = request.app[STATE]
    if state.policy is None:
        return _refuse(503, "starting")
    hosts, origins = request.headers.getall("Host", []), request.headers.getall("Origin", [])
    problem = "more than one Host or Origin header" if len(hosts) > 1 or len(origins) > 1 else None
    problem = problem or state.policy.host_problem(hosts[0] if hosts else None)
    problem = problem or state.policy.origin_problem(origins[0] if origins else None)
    if problem:
        state.limited.warning(
            "http_foreign_request", key="http_foreign_request", problem=problem, path=request.path
        )
        return _refuse(403, problem)
    return await handler(request)


@web.middleware
async def _authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        return _refuse(
            503, f"the API token is not available, so nothing can be changed: {state.token_problem}"
        )
    problem = bearer_problem(request.headers.get("Authorization"), state.token)
    if problem:
        state.limited.warning(
            "http_auth_failed", key=f"http_auth_failed:{problem}", problem=problem, path=request.path
        )
        return _refuse(
            401,
            f"{problem}: {SEND_THE_TOKEN}",
            **{"WWW-Authenticate": 'Bearer realm="punchgate"'},
        )
    return await handler(request)


@web.middleware
async def _bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
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
            return _refuse(408, f"the body did not arrive within {BODY_TIMEOUT:g} s")
    return await handler(request)


MIDDLEWARES = [
    _plain_answers,
    _bounded_work,
    _own_host_and_origin,
    _authenticated,
    _bounded_body,
]  # outermost first


def build_app(state: ApiState, console: console_web.Console) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=MIDDLEWARES)
    app[STATE] = state
    app.add_routes(ROUTES)
    console.attach(state.gateway, state.api_threads)
    console_web.add_routes(app, console)
    from punchgate.gateway.manual_api import ROUTES as MANUAL_ROUTES  # it imports this module

    app.add_routes(MANUAL_ROUTES)
    from punchgate.gateway.push_commands_api import ROUTES as PUSH_COMMAND_ROUTES  # it imports this module

    app.add_routes(PUSH_COMMAND_ROUTES)
    return app


class HttpServer:
    """The running server as the daemon and the tests use it: start(), port, close().

    `token` is the API token state-changing requests must send; without one (None) they are
    answered 503 with `token_problem`, and everything else still works. `console` serves the
    pages (without one, signing in is unavailable); `tls` makes it HTTPS.
    """

    def __init__(
        self,
        app: Application,
        *,
        token: str | None = None,
        token_problem: str = "no API token was loaded",
        console: console_web.Console | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.token_problem = token_problem
        self.console = console or console_web.Console.unavailable("the console was not set up")
        self.tls = tls
        self.limited = RateLimitedLog(log)
        self.guard = ConnectionGuard(
            max_connections=MAX_CONNECTIONS, header_timeout=HEADER_TIMEOUT, limited=self.limited
        )
        self._state: ApiState | None = None
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port actually bound (the one the OS picked when settings ask for 0)."""
        assert self._runner is not None
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self, host: str, port: int) -> None:
        state = ApiState(self.app, self.token, self.token_problem, self.guard, self.limited)
        runner = web.AppRunner(
            build_app(state, self.console),
            handle_signals=False,
            access_log=None,
            keepalive_timeout=IDLE_TIMEOUT,
            lingering_time=0,  # after an answer, never wait on for the rest of an unread body
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        assert runner.server is not None
        self.guard.install(runner.server)
        quiet_aiohttp_loggers(self.limited)
        try:
            await web.TCPSite(runner, host, port, backlog=BACKLOG, ssl_context=self.tls).start()
        except BaseException:
            await runner.cleanup()
            _stop_threads(state)
            raise
        self._runner, self._state = runner, state
        state.policy = HostPolicy.build(
            port=self.port, bind=host, allowed_hosts=list(self.app.settings.http.allowed_hosts)
        )
        log.info(
            "http_listening",
            bind=host,
            port=self.port,
            token=self.token is not None,
            tls=self.tls is not None,
            console=self.console.signer is not None,
        )

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        state, self._state = self._state, None
        if runner is not None:
            await runner.cleanup()
        if state is not None:
            _stop_threads(state)
        self.limited.flush()


def _stop_threads(state: ApiState) -> None:
    state.api_threads.shutdown(wait=False, cancel_futures=True)
    state.health_thread.shutdown(wait=False, cancel_futures=True)


async def start_http_server(app: Application) -> HttpServer:
    """The daemon's server: lifts the open-files limit, loads (or creates) the API token, listens.

    A token that cannot be created does not stop the daemon: reading terminals matters more
    than replay. The API then answers POSTs 503, saying why, and logs an error.
    """
    raise_open_files_limit()
    settings = app.settings
    tls: ssl.SSLContext | None = None
    if settings.http.tls_cert_file is not None and settings.http.tls_key_file is not None:
        try:
            tls = await asyncio.to_thread(
                tls_context, settings.http.tls_cert_file, settings.http.tls_key_file
            )
        except (OSError, ssl.SSLError) as exc:
            # Never fall back to plain HTTP: serve nothing, and keep reading terminals.
            log.error("http_tls_unavailable", error=f"{type(exc).__name__}: {exc}")
            return HttpServer(app)
    token: str | None = None
    problem = ""
    try:
        token, path = await asyncio.to_thread(ensure_token, settings.http, settings.buffer)
    except TokenError as exc:
        problem = str(exc)
        log.error("api_token_unavailable", error=problem)
    else:
        register_secret(token)  # masked should it ever reach a log line
        log.info("api_token_ready", path=str(path))
    console = await asyncio.to_thread(
        console_web.Console.open, settings.buffer.path, secure_cookies=tls is not None
    )
    server = HttpServer(app, token=token, token_problem=problem, console=console, tls=tls)
    await server.start(settings.http.bind, settings.http.port)
    return server


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server's TLS context: TLS 1.2 or newer, the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
