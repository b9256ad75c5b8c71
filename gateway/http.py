"""The daemon's HTTP server: /metrics, /healthz, /api/devices, the status page and POST /api/replay.

Built on aiohttp.web. It serves from the daemon's own asyncio loop, not from a thread or a second
loop, so /healthz answering at all still proves that loop is alive. One maintained library gives
both the server and a client (for what the gateway will call over HTTP), and its middlewares are
where the authentication and size limits go that the coming console and the LAN-facing ZK push
receiver need. It bounds the request line, headers and body (`client_max_size`) itself. Starlette
would have needed uvicorn on top, which runs its own server loop.

What the pin does not guarantee: older aiohttp (3.9 still satisfies it) never times out a
client that connects and never completes its request; the hand-written server gave up after
10 s. Recent aiohttp (3.14 here) closes such a connection after `IDLE_TIMEOUT`. Harmless on
loopback; anything that listens on the LAN should raise the lower bound first.

Every route is in `ROUTES` and every middleware in `MIDDLEWARES`. The answers are the old
server's: the same status codes, content types and bodies, one request per connection
(`Connection: close`) and plain-text errors. Where they differ: a wrong method on a known path is
405 and an unknown path is 404, whatever the method (before, GET /api/replay gave 404 and
POST /nope 405). An HTTP/1.1 request without Host, or a malformed one, gets 400, and a handler that
fails gets 500; the old server just closed the connection in those cases.
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from punchgate.gateway.metrics import render_metrics
from punchgate.gateway.status import gateway_status, health_verdict

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024  # bytes; nothing served today takes a body at all
IDLE_TIMEOUT = 10.0  # seconds a connection may stay open without a complete request (see above)
SHUTDOWN_TIMEOUT = 2.0  # seconds close() waits for requests already being answered

GATEWAY: web.AppKey[Application] = web.AppKey("gateway")
TEXT = "text/plain; charset=utf-8"


def _reply(status: int, content_type: str, body: bytes) -> web.Response:
    # The header is set directly: aiohttp's content_type= argument refuses a charset.
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


async def _metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(render_metrics, request.app[GATEWAY])
    return _reply(200, "text/plain; version=0.0.4; charset=utf-8", body)


async def _healthz(request: web.Request) -> web.Response:
    healthy, reason = await asyncio.to_thread(health_verdict, request.app[GATEWAY])
    return _reply(200 if healthy else 503, TEXT, (reason + "\n").encode())


async def _api_devices(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(gateway_status, request.app[GATEWAY])
    return _reply(200, "application/json", json.dumps(status, default=str).encode())


async def _page(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(gateway_status, request.app[GATEWAY])
    rows = "".join(
        "<tr class='{s}'><td>{n}</td><td>{s}</td><td>{f}</td><td>{c}</td><td>{d}</td><td>{r}</td><td>{p}</td></tr>".format(
            n=html.escape(d["device"]),
            s=html.escape(d["state"]),
            f=html.escape(", ".join(f"{f['code']}: {f['detail']}" for f in d["faults"]) or "—"),
            c=html.escape(str(d["last_contact"] or "never")),
            d=html.escape("—" if d["clock_drift_seconds"] is None else f"{d['clock_drift_seconds']:+.0f} s"),
            r=html.escape(f"{d['record_count']}/{d['record_capacity']}" if d["record_capacity"] else "—"),
            p=d["pending"],
        )
        for d in status["devices"]
    )
    gw = status["gateway"]
    faults = ", ".join(f"{f['code']}: {f['detail']}" for f in gw["faults"]) or "none"
    body = f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>punchgate {html.escape(gw["gateway_id"])}</title><style>
body{{font-family:sans-serif;margin:2em}} td,th{{padding:.3em .8em;text-align:left}}
.online{{background:#dfd}} .degraded{{background:#ffd}} .offline{{background:#fdd}}</style></head><body>
<h1>punchgate {html.escape(gw["gateway_id"])}</h1>
<p>broker: {"connected" if gw["broker_connected"] else "NOT connected"} · pending punches: {gw["pending"]}
· gateway faults: {html.escape(faults)}</p>
<table><tr><th>terminal</th><th>state</th><th>faults</th><th>last contact</th><th>drift</th>
<th>records</th><th>pending</th></tr>{rows}</table></body></html>"""
    return _reply(200, "text/html; charset=utf-8", body.encode())


async def _replay(request: web.Request) -> web.Response:
    """POST /api/replay?since=UNIX_TIME[&device=NAME]: send delivered punches again."""
    app = request.app[GATEWAY]
    try:
        since = float(request.query["since"])
    except (KeyError, ValueError):
        return _reply(400, TEXT, b"since=UNIX_TIME is required\n")
    device = request.query.get("device") or None  # an empty device= means every terminal, as before
    if device is not None and device not in app.devices:
        return _reply(404, TEXT, f"no terminal named {device!r}\n".encode())
    if app.store is None or app.forwarder is None:
        return _reply(503, TEXT, b"starting\n")
    count = await asyncio.to_thread(app.store.requeue_delivered, since=since, device=device)
    app.forwarder.rewind()
    return _reply(200, "application/json", json.dumps({"requeued": count}).encode())


# GET routes answer HEAD too (headers only).
ROUTES = [
    web.get("/metrics", _metrics),
    web.get("/healthz", _healthz),
    web.get("/api/devices", _api_devices),
    web.get("/", _page),
    web.post("/api/replay", _replay),
]


@web.middleware
async def _plain_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as a short text line (`not found`) and one request per connection, as before."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _reply(exc.status, "text/plain", f"{exc.reason.lower()}\n".encode())
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("http_handler_failed", path=request.path)
        response = _reply(500, "text/plain", b"internal error\n")
    response.force_close()
    return response


@web.middleware
async def _bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 for a body over client_max_size. aiohttp checks that size only when a handler reads
    the body, so read it here, before any handler runs. It stays cached for request.read()."""
    if request.body_exists:
        limit = request.client_max_size
        declared = request.content_length
        if declared is not None and declared > limit:
            raise web.HTTPRequestEntityTooLarge(limit, declared)
        await request.read()  # raises the 413 itself for a chunked body that runs over
    return await handler(request)


MIDDLEWARES = [_plain_answers, _bounded_body]  # outermost first


def build_app(gateway: Application) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=MIDDLEWARES)
    app[GATEWAY] = gateway
    app.add_routes(ROUTES)
    return app


class HttpServer:
    """The running server as the daemon and the tests use it: start(), port, close()."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port actually bound (the one the OS picked when settings ask for 0)."""
        assert self._runner is not None
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self, host: str, port: int) -> None:
        runner = web.AppRunner(
            build_app(self.app),
            handle_signals=False,
            access_log=None,
            keepalive_timeout=IDLE_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("http_listening", bind=host, port=self.port)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def start_http_server(app: Application) -> HttpServer:
    server = HttpServer(app)
    await server.start(app.settings.http.bind, app.settings.http.port)
    return server
