"""The daemon's own HTTP routes: GET /metrics, /healthz, /api/devices, /api/status.txt and POST /api/replay.

Each handler reads through `http_common.in_thread`, so the store is queried on the API's
threads (/healthz on its own one). A replay request is checked field by field and answered 400
with the sentence naming the problem: `since` must be a time the buffer can still have
delivered punches for (`parse_since`), `device` a configured terminal or null. /api/status.txt
is `punchgate status`'s text without colour (`status_text`), for the CLI writing to a pipe. The make-up
punches' routes are in `manual_api`, the push-terminal commands' in `push_commands_api`, the
console's in `console.web`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import structlog
from aiohttp import web

from punchgate.gateway.http_common import STATE, TEXT, in_thread, json_object, refuse, reply
from punchgate.gateway.metrics import render_metrics
from punchgate.gateway.status import devices_json, health_verdict

log = structlog.get_logger(__name__)

EARLIEST_SINCE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # no gateway delivered punches before this
FUTURE_SLACK = 60.0  # seconds a `since` may lie ahead of our clock (the caller's clock may be ahead)


async def _metrics(request: web.Request) -> web.Response:
    body = await in_thread(request, render_metrics)
    return reply(200, "text/plain; version=0.0.4; charset=utf-8", body)


async def _healthz(request: web.Request) -> web.Response:
    healthy, reason = await in_thread(request, health_verdict)
    return reply(200 if healthy else 503, TEXT, (reason + "\n").encode())


async def _api_devices(request: web.Request) -> web.Response:
    body = await in_thread(request, devices_json)
    return reply(200, "application/json", body)


async def _api_status_text(request: web.Request) -> web.Response:
    """GET /api/status.txt?width=80&zone=…[&tz=…]: the text `punchgate status` prints to a pipe
    at that width, and whether it is healthy (X-Punchgate-Healthy: yes/no, its exit code)."""
    width = request.query.get("width", "")
    if not (width.isdigit() and len(width) <= 4):
        return refuse(400, "width must be a number of columns, e.g. width=80")
    # Imported here: the daemon starts without rich's layout code until someone asks.
    from punchgate.gateway.status_text import status_text, zone_problem

    problem = zone_problem(request.query.get("tz"), request.query.get("zone"))
    if problem:
        return refuse(409, problem)
    try:
        text, healthy = await in_thread(request, lambda app: status_text(app, int(width)))
    except ValueError as exc:
        return refuse(400, str(exc))
    return reply(200, TEXT, text.encode(), **{"X-Punchgate-Healthy": "yes" if healthy else "no"})


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


async def _replay(request: web.Request) -> web.Response:
    """POST /api/replay {"since": TIME, "device": NAME or null}: send delivered punches again."""
    app = request.app[STATE].gateway
    body = await json_object(request)
    unknown = sorted(set(body) - {"since", "device"})
    if unknown:
        return refuse(400, f"unknown key {unknown[0]!r} (expected since and device)")
    if "since" not in body:
        return refuse(400, 'since is required, e.g. {"since": "2026-11-20T06:00:00Z"}')
    try:
        since = parse_since(
            body["since"],
            now=dt.datetime.now(dt.UTC).timestamp(),
            retention_days=app.settings.buffer.retention_days,
        )
    except ValueError as exc:
        return refuse(400, str(exc))
    device = body.get("device") or None  # null or "" means every terminal
    if device is not None and not isinstance(device, str):
        return refuse(400, "device must be a terminal name or null")
    if device is not None and device not in app.devices:
        return refuse(404, f"no terminal named {device!r}")
    if app.store is None or app.forwarder is None:
        return refuse(503, "starting")
    store = app.store
    count = await in_thread(request, lambda _app: store.requeue_delivered(since=since, device=device))
    app.forwarder.rewind()
    log.info("replay_requested", since=_iso(since), device=device, requeued=count)
    return reply(200, "application/json", json.dumps({"requeued": count}).encode())


# GET routes answer HEAD too (headers only).
ROUTES = [
    web.get("/metrics", _metrics),
    web.get("/healthz", _healthz),
    web.get("/api/devices", _api_devices),
    web.get("/api/status.txt", _api_status_text),
    web.post("/api/replay", _replay),
]
