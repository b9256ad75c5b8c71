"""The daemon's HTTP server: /metrics, /healthz, /api/devices, /api/status.txt, POST /api/replay
and the console.

Built on aiohttp.web. It serves from the daemon's own asyncio loop, not from a thread or a second
loop, so /healthz answering at all still proves that loop is alive. One maintained library gives
both the server and a client (for what the gateway will call over HTTP), and its middlewares are
where the authentication and size limits go. It bounds the request line, headers and body
(`client_max_size`) itself. Starlette would have needed uvicorn on top, which runs its own
server loop.

This module builds the application and runs the server (`HttpServer`, `start_http_server`,
`tls_context`); what it is built from, each in the module of its job (docs/health.md, "HTTP"):

    http_common.py    ApiState, plain-text and JSON answers, the API's threads, the outermost
                      middleware (plain answers, one request per connection)
    http_guards.py    Host and Origin (403), the API token or an admin's session (401), body
                      size (413) and time (408)
    http_capacity.py  connections held, requests in progress (503), timeouts
    http_api.py       the routes /metrics, /healthz, /api/devices, /api/status.txt (laid out by
                      status_text.py for `punchgate status`), /api/replay
    http_limits.py    the connection guard, the open-files limit, quiet aiohttp loggers
    http_security.py  the Host/Origin rules and the bearer token check

The console's pages (`punchgate.gateway.console.web`, docs/console.md) check their own
sessions and CSRF tokens, behind the same middlewares; its routes are added by
`console.web.add_routes`. With `[http] tls_cert_file` and `tls_key_file` the server speaks
HTTPS only.

Every route is in `http_api.ROUTES` (the make-up punches' in `manual_api.ROUTES`, the
push-terminal commands' in `push_commands_api.ROUTES`, the console's in `console.web`) and every
middleware in `MIDDLEWARES`. One request per connection
(`Connection: close`) and plain-text errors. A wrong method on a known path is 405, an unknown
path 404, whatever the method; a malformed request 400, a handler that fails 500.

`MAX_BODY`, `BACKLOG`, `HEADER_TIMEOUT`, `MAX_CONNECTIONS` and `parse_since` stay importable
from here.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from punchgate.gateway import manual_api, push_commands_api
from punchgate.gateway.console import web as console_web
from punchgate.gateway.http_api import ROUTES, parse_since
from punchgate.gateway.http_capacity import (
    BACKLOG,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    SHUTDOWN_TIMEOUT,
    bounded_work,
)
from punchgate.gateway.http_common import STATE, ApiState, plain_answers
from punchgate.gateway.http_guards import MAX_BODY, authenticated, bounded_body, own_host_and_origin
from punchgate.gateway.http_limits import ConnectionGuard, quiet_aiohttp_loggers, raise_open_files_limit
from punchgate.gateway.http_security import HostPolicy
from punchgate.gateway.logs import register_secret
from punchgate.gateway.ratelimit_log import RateLimitedLog
from punchgate.gateway.token import TokenError, ensure_token

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

# Imported from here by the tests, as before the split.
__all__ = [
    "BACKLOG",
    "HEADER_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MIDDLEWARES",
    "HttpServer",
    "build_app",
    "parse_since",
    "start_http_server",
    "tls_context",
]

log = structlog.get_logger(__name__)

MIDDLEWARES = [
    plain_answers,
    bounded_work,
    own_host_and_origin,
    authenticated,
    bounded_body,
]  # outermost first


def build_app(state: ApiState, console: console_web.Console) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=MIDDLEWARES)
    app[STATE] = state
    app.add_routes(ROUTES)
    console.attach(state.gateway, state.api_threads)
    console_web.add_routes(app, console)
    app.add_routes(manual_api.ROUTES)
    app.add_routes(push_commands_api.ROUTES)
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
