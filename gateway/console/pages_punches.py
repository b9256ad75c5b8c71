"""The punches search page (/punches), and the buffer search the terminal page shares.

Punches are read through `punch_query`'s read-only connection to the buffer: the console never
changes it and takes no part in the daemon's writes. Days are the site's days; a day that is
not a date is named on the page instead of being searched. Newest first, a page at a time.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from punchgate.gateway.console import punch_query
from punchgate.gateway.console.health_view import zone
from punchgate.gateway.console.render import Page, render, site_zone
from punchgate.gateway.console.state import Console


def search(
    console: Console, flt: punch_query.PunchFilter, page_number: int, size: int
) -> tuple[punch_query.PunchPage | None, str]:
    assert console.gateway is not None
    try:
        found = punch_query.search(
            Path(console.gateway.settings.buffer.path),
            flt,
            zone(site_zone(console)),
            page=page_number,
            size=size,
        )
    except (OSError, sqlite3.Error) as exc:
        return None, str(exc)
    return found, ""


def _day(value: str, page: Page, errors: list[str]) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        errors.append(page.words("punches.bad_day", value=value[:20]))
        return None


def punches(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    assert console.gateway is not None
    query = request.query
    errors: list[str] = []
    terminals = [t.name for t in console.gateway.settings.terminals]
    device = query.get("terminal", "")
    source = query.get("source", "")
    flt = punch_query.PunchFilter(
        device=device or None,
        user_id=query.get("user", "").strip()[:64] or None,
        day_from=_day(query.get("from", ""), page, errors),
        day_to=_day(query.get("to", ""), page, errors),
        source=source if source in punch_query.SOURCES else None,
    )
    try:
        number = max(1, int(query.get("page", "1")))
    except ValueError:
        number = 1
    found, problem = (None, "") if errors else search(console, flt, number, punch_query.PAGE_SIZE)
    shown = {k: query.get(k, "") for k in ("terminal", "user", "from", "to", "source")}

    def link(to_page: int) -> str:
        return "/punches?" + urlencode({**{k: v for k, v in shown.items() if v}, "page": to_page})

    return render(
        console,
        page,
        "punches.html",
        terminals=terminals,
        sources=punch_query.SOURCES,
        shown=shown,
        errors=errors,
        found=found,
        problem=problem,
        link=link,
    )
