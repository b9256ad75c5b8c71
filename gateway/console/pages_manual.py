"""Make-up punches in the console (/manual): enter one, list them by status, approve or reject.

The rules are `[manual]`'s, checked by the buffer in the same transaction as the entry or the
decision (punchgate.sync.manual): nobody decides their own entry, no conflict with a punch, not
too many days back, the monthly limit. The person entering or deciding is the signed-in
account, never a form field. An approved entry becomes a punch with source `manual`, and the
forwarder is woken to send it. A refused entry is shown again with the sentence saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from punchgate.gateway.console.render import Page, render
from punchgate.gateway.console.state import Console

log = structlog.get_logger(__name__)

MANUAL_SHOWN = 100


def _manual_choices(console: Console) -> dict[str, Any]:
    assert console.gateway is not None
    from punchgate.gateway.manual_records import target

    settings = console.gateway.settings
    devices = [t.name for t in settings.terminals] + [n for n in [settings.manual.virtual_terminal] if n]
    states: dict[str, None] = {}
    for device in devices:
        for _code, name in sorted(target(settings, device).state_names().items()):
            states.setdefault(name, None)
    return {"devices": devices, "states": list(states), "reasons": settings.manual.reasons}


def _state_label(console: Console) -> Callable[[str, int], str]:
    """`check_in` for a make-up entry's raw state code at its terminal (the code when unnamed)."""
    assert console.gateway is not None
    from punchgate.gateway.manual_records import target
    from punchgate.sync.manual import ManualRefused

    settings = console.gateway.settings

    def label(device: str, code: int) -> str:
        try:
            return target(settings, device).state_names().get(code, str(code))
        except ManualRefused:  # a terminal since removed from the config
            return str(code)

    return label


def _manual_page(
    console: Console,
    page: Page,
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
    form: Mapping[str, str] | None = None,
) -> web.Response:
    assert console.gateway is not None
    store = console.gateway.store
    shown = request.query.get("status", "pending")
    entries = []
    if store is not None:
        from punchgate.sync.manual import STATUSES

        entries = store.list_manual(status=next((s for s in STATUSES if s == shown), None))
    return render(
        console,
        page,
        "manual.html",
        status,
        entries=entries[:MANUAL_SHOWN],
        shown=shown,
        error=error,
        notice=notice,
        form=dict(form or {}),
        may_decide=bool(page.account and page.account.may("manual_decide")),
        state_label=_state_label(console),
        approval_required=console.gateway.settings.manual.approval_required,
        **_manual_choices(console),
    )


def manual_get(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _manual_page(console, page, request)


def manual_add(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    """Enter a make-up punch; the person entering it is the signed-in account, never a form field."""
    assert console.gateway is not None and page.account is not None
    from punchgate.gateway.manual_records import enter_manual
    from punchgate.sync.manual import ManualRefused

    app, store = console.gateway, console.gateway.store
    if store is None:
        return _manual_page(console, page, request, status=503, error="starting", form=form)
    keys = ("device", "user_id", "local_time", "state", "reason_code", "reason")
    body: dict[str, Any] = {key: form.get(key, "") for key in keys}
    body["entered_by"] = page.account.name
    try:
        entry = enter_manual(app, store, body, via="console")
    except ManualRefused as exc:
        return _manual_page(console, page, request, status=exc.status, error=str(exc), form=form)
    notice = page.words("manual.entered", user=entry.user_id, time=entry.local_time)
    return _manual_page(console, page, request, notice=notice)


def manual_decide(
    approve: bool,
) -> Callable[[Console, Page, web.Request, Mapping[str, str]], web.StreamResponse]:
    def act(
        console: Console, page: Page, request: web.Request, form: Mapping[str, str]
    ) -> web.StreamResponse:
        assert console.gateway is not None and page.account is not None
        from punchgate.gateway.manual_records import MAX_TEXT, punch_builder
        from punchgate.sync.manual import ManualRefused

        app, store = console.gateway, console.gateway.store
        if store is None:
            return _manual_page(console, page, request, status=503, error="starting")
        note = form.get("note", "").strip()[:MAX_TEXT]
        if not approve and not note:
            return _manual_page(console, page, request, status=400, error=page.words("manual.note_required"))
        try:
            entry = store.decide_manual(
                request.match_info["entry_id"],
                approve=approve,
                by=page.account.name,
                note=note or None,
                settings=app.settings.manual,
                punch=punch_builder(app.settings),
            )
        except ManualRefused as exc:
            return _manual_page(console, page, request, status=exc.status, error=str(exc))
        log.info(
            "manual_punch_decided",
            entry=entry.entry_id,
            status=entry.status,
            by=entry.decided_by,
            via="console",
        )
        if approve and app.forwarder is not None:
            app.forwarder.notify_new_punches()
        key = "manual.approved" if approve else "manual.rejected"
        return _manual_page(
            console, page, request, notice=page.words(key, user=entry.user_id, time=entry.local_time)
        )

    return act
