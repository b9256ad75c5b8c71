"""The loopback API for make-up punches (docs/manual-punches.md), behind the same guards as replay.

    POST /api/manual                     {"device", "user_id", "local_time", "state",
                                          "reason_code", "reason", "entered_by"}   -> 201 entry
    GET  /api/manual?status=&device=&user_id=                                    -> {"entries": [...]}
    GET  /api/manual/{entry_id}                                                  -> entry
    POST /api/manual/{entry_id}/approve  {"by", "note"?}                         -> entry
    POST /api/manual/{entry_id}/reject   {"by", "note"}                          -> entry

`punchgate.gateway.http` applies its middlewares to these routes too: Host and Origin must be
this gateway's (403), POSTs need the API token (401) and a JSON body (415), bodies and
requests in progress are bounded. The GETs need the token as well, checked here: entries name
people and their reasons. A rule a request breaks is answered 400 (bad input), 403 (the person
who entered it cannot decide it), 404 (no such terminal or entry) or 409 (it collides with a
punch, the monthly limit is reached, it is decided already), with the sentence saying which.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from punchgate.gateway.http_common import (
    STATE,
    Refusal,
    in_thread,
    json_answer,
    json_object,
    refuse,
    token_for_reads,
)
from punchgate.gateway.manual_records import MAX_NAME, MAX_TEXT, enter_manual, punch_builder
from punchgate.sync.manual import STATUSES, ManualEntry, ManualRefused

log = structlog.get_logger(__name__)


def _store(request: web.Request) -> Any:
    app = request.app[STATE].gateway
    if app.store is None:
        raise Refusal(503, "starting")
    return app.store


async def _add(request: web.Request) -> web.Response:
    app = request.app[STATE].gateway
    store = _store(request)
    body = await json_object(request)
    try:
        entry = await in_thread(request, lambda _app: enter_manual(app, store, body))
    except ManualRefused as exc:
        return refuse(exc.status, str(exc))
    return json_answer(201, entry.as_dict())


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    app = request.app[STATE].gateway
    store = _store(request)
    body = await json_object(request)
    unknown = sorted(set(body) - {"by", "note"})
    if unknown:
        return refuse(400, f"unknown key {unknown[0]!r} (expected by and note)")
    by, note = body.get("by"), body.get("note")
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_NAME:
        return refuse(
            400, f"by is required: the name of the person who {'approves' if approve else 'rejects'} it"
        )
    if note is not None and (not isinstance(note, str) or len(note) > MAX_TEXT):
        return refuse(400, f"note must be a string of at most {MAX_TEXT} characters")
    if not approve and not (note or "").strip():
        return refuse(400, "note is required: say why the make-up punch is rejected")
    entry_id = request.match_info["entry_id"]

    def work(_app: Any) -> ManualEntry:
        result: ManualEntry = store.decide_manual(
            entry_id,
            approve=approve,
            by=by.strip(),
            note=(note or "").strip() or None,
            settings=app.settings.manual,
            punch=punch_builder(app.settings),
        )
        return result

    try:
        entry = await in_thread(request, work)
    except ManualRefused as exc:
        return refuse(exc.status, str(exc))
    log.info("manual_punch_decided", entry=entry.entry_id, status=entry.status, by=entry.decided_by)
    if approve and app.forwarder is not None:
        app.forwarder.notify_new_punches()
    return json_answer(200, entry.as_dict())


async def _approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


async def _reject(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)


async def _list(request: web.Request) -> web.Response:
    token_for_reads(request)
    store = _store(request)
    query = request.query
    unknown = sorted(set(query) - {"status", "device", "user_id"})
    if unknown:
        return refuse(400, f"unknown parameter {unknown[0]!r} (expected status, device, user_id)")
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        return refuse(400, f"status must be one of {', '.join(STATUSES)}")
    entries = await in_thread(
        request,
        lambda _app: store.list_manual(
            status=status, device=query.get("device") or None, user_id=query.get("user_id") or None
        ),
    )
    return json_answer(200, {"entries": [e.as_dict() for e in entries]})


async def _one(request: web.Request) -> web.Response:
    token_for_reads(request)
    store = _store(request)
    entry_id = request.match_info["entry_id"]
    entry = await in_thread(request, lambda _app: store.get_manual(entry_id))
    if entry is None:
        return refuse(404, f"no make-up punch {entry_id!r}")
    return json_answer(200, entry.as_dict())


ROUTES = [
    web.post("/api/manual", _add),
    web.get("/api/manual", _list),
    web.get("/api/manual/{entry_id}", _one),
    web.post("/api/manual/{entry_id}/approve", _approve),
    web.post("/api/manual/{entry_id}/reject", _reject),
]
