"""A small read-only HTTP server: /metrics, /healthz, /api/devices and a status page.

Plain asyncio streams rather than a web framework: four GET routes on loopback do not justify
a dependency, and it runs on the daemon's own loop, so /healthz answering at all proves the
loop is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from punchgate.gateway.metrics import render_metrics
from punchgate.gateway.status import gateway_status, health_verdict

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)
MAX_REQUEST = 8192

Response = tuple[int, str, bytes]
Handler = Callable[["Application"], Awaitable[Response]]


async def _metrics(app: Application) -> Response:
    body = await asyncio.to_thread(render_metrics, app)
    return 200, "text/plain; version=0.0.4; charset=utf-8", body


async def _healthz(app: Application) -> Response:
    healthy, reason = await asyncio.to_thread(health_verdict, app)
    return (200 if healthy else 503), "text/plain; charset=utf-8", (reason + "\n").encode()


async def _api_devices(app: Application) -> Response:
    status = await asyncio.to_thread(gateway_status, app)
    return 200, "application/json", json.dumps(status, default=str).encode()


async def _page(app: Application) -> Response:
    status = await asyncio.to_thread(gateway_status, app)
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
    return 200, "text/html; charset=utf-8", body.encode()


async def _replay(app: Application, query: dict[str, list[str]]) -> Response:
    """POST /api/replay?since=UNIX_TIME[&device=NAME]: send delivered punches again."""
    try:
        since = float(query["since"][0])
    except (KeyError, ValueError):
        return 400, "text/plain; charset=utf-8", b"since=UNIX_TIME is required\n"
    device = query.get("device", [None])[0]
    if device is not None and device not in app.devices:
        return 404, "text/plain; charset=utf-8", f"no terminal named {device!r}\n".encode()
    if app.store is None or app.forwarder is None:
        return 503, "text/plain; charset=utf-8", b"starting\n"
    count = await asyncio.to_thread(app.store.requeue_delivered, since=since, device=device)
    app.forwarder.rewind()
    return 200, "application/json", json.dumps({"requeued": count}).encode()


POST_ROUTES: dict[str, Callable[[Application, dict[str, list[str]]], Awaitable[Response]]] = {
    "/api/replay": _replay,
}

ROUTES: dict[str, Handler] = {
    "/metrics": _metrics,
    "/healthz": _healthz,
    "/api/devices": _api_devices,
    "/": _page,
}


class HttpServer:
    def __init__(self, app: Application) -> None:
        self.app = app
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        log.info("http_listening", bind=host, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, *_ = head[:MAX_REQUEST].decode("latin-1").split(" ", 2)
            path, _, query = target.partition("?")
            handler = ROUTES.get(path)
            if method == "POST" and path in POST_ROUTES:
                status, ctype, body = await POST_ROUTES[path](self.app, urllib.parse.parse_qs(query))
            elif method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif handler is None:
                status, ctype, body = 404, "text/plain", b"not found\n"
            else:
                status, ctype, body = await handler(self.app)
            reason = {
                200: "OK",
                400: "Bad Request",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }
            writer.write(
                f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass  # a broken or slow client: nothing to answer
        except Exception:
            log.exception("http_handler_failed")
        finally:
            writer.close()


async def start_http_server(app: Application) -> HttpServer:
    server = HttpServer(app)
    await server.start(app.settings.http.bind, app.settings.http.port)
    return server
