"""The overview (/, and the tiles its script refreshes) and one terminal's page (/terminals/NAME).

Both read the same status as /api/devices and `punchgate status` (`gateway_status`), seen
through `health_view`: root cause first, times in the site's zone. The overview adds the
gateway's panel (broker, backlog, free disk); a terminal's page adds its fault history since
the gateway started and its most recent punches, read from the buffer, and for an admin the buttons
of the remote commands allowed for it (`pages_commands`).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from punchgate.gateway import __version__
from punchgate.gateway.console import punch_query
from punchgate.gateway.console.health_view import drift_text, fill_text, gateway_view, terminal_views
from punchgate.gateway.console.pages_commands import buttons, commands_enabled
from punchgate.gateway.console.pages_punches import search
from punchgate.gateway.console.render import Page, render
from punchgate.gateway.console.state import Console
from punchgate.gateway.status import gateway_status

REFRESH_SECONDS = 5
RECENT_PUNCHES = 20
HISTORY_SHOWN = 50


def _disk(console: Console) -> dict[str, Any]:
    assert console.gateway is not None
    buffer = console.gateway.settings.buffer
    try:
        free = shutil.disk_usage(Path(buffer.path).parent).free // (1024 * 1024)
    except OSError:
        free = None
    return {"free": free, "minimum": buffer.min_free_disk_mb}


def _overview_values(console: Console) -> dict[str, Any]:
    assert console.gateway is not None
    status = gateway_status(console.gateway)
    terminals = terminal_views(status)
    counts = {
        state: sum(1 for v in terminals if v.state == state) for state in ("offline", "degraded", "online")
    }
    return {
        "terminals": terminals,
        "gw": gateway_view(status),
        "counts": counts,
        "disk": _disk(console),
        "version": __version__,
        "updated": dt.datetime.now(dt.UTC),
        "drift_text": drift_text,
        "fill_text": fill_text,
        "refresh_seconds": REFRESH_SECONDS,
    }


def overview(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return render(console, page, "overview.html", **_overview_values(console))


def overview_fragment(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return render(console, page, "_live.html", **_overview_values(console))


def _history(console: Console, name: str) -> list[Any]:
    history = getattr(console.gateway, "fault_history", None) or ()
    return [t for t in reversed(list(history)) if t.device == name][:HISTORY_SHOWN]


def terminal(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    assert console.gateway is not None
    name = request.match_info["name"]
    status = gateway_status(console.gateway)
    found = [v for v in terminal_views(status) if v.name == name]
    if not found:
        return render(console, page, "error.html", 404, message=page.words("terminal.unknown", name=name))
    recent, problem = search(console, punch_query.PunchFilter(device=name), 1, RECENT_PUNCHES)
    return render(
        console,
        page,
        "terminal.html",
        terminal=found[0],
        history=_history(console, name),
        recent=recent,
        problem=problem,
        drift_text=drift_text,
        fill_text=fill_text,
        buttons=buttons(console, page, name),
        commands_enabled=commands_enabled(console),
    )
