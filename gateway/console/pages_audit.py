"""The audit chain in the console: appending the console's own actions, and the /audit page.

Account changes and exports made in the console are appended to the buffer's audit chain
(docs/audit.md) with the account that made them, when the store keeps one; a failed entry is
logged, never undoes the action. The page shows the chain's length and head and the latest
administrative actions; `?verify=1` recomputes the whole chain read-only
(punchgate.sync.audit_verify), which reads every punch, so only on demand.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from punchgate.gateway.console import punch_query
from punchgate.gateway.console.render import Page, render
from punchgate.gateway.console.state import Console

log = structlog.get_logger(__name__)


def record_action(console: Console, kind: str, data: dict[str, Any]) -> None:
    """Record an action in the buffer's audit chain when the store keeps one (docs/audit.md)."""
    store = console.gateway.store if console.gateway else None
    append = getattr(store, "audit_action", None)
    if append is None:
        return
    try:
        append(kind, data)
    except Exception:  # the action is done; a failed audit entry is logged, not undone
        log.exception("console_audit_failed", kind=kind)


def audit_page(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    """The chain's head and recent administrative actions; `?verify=1` recomputes the whole
    chain (punchgate.sync.audit_verify, read-only; it reads every punch, so only on demand)."""
    assert console.gateway is not None
    from punchgate.sync.audit_verify import verify

    path = Path(console.gateway.settings.buffer.path)
    view, report, problem = None, None, ""
    try:
        view = punch_query.audit_view(path)
        if request.query.get("verify") == "1":
            report = verify(path)
            log.info(
                "console_audit_verified", account=page.account.name if page.account else "", ok=report.ok
            )
    except (OSError, sqlite3.Error) as exc:
        problem = str(exc)
    return render(console, page, "audit.html", view=view, report=report, problem=problem)
