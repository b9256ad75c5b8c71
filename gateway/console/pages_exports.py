"""The exports page (/exports) and its download: the same files as `punchgate export`.

A range of days (each terminal's local days, the end day included), one terminal or all, one
user or everybody, as CSV or XLSX, written by punchgate.sync.export (read-only) into a private
temporary folder, read back and removed. Up to `MAX_EXPORT_BYTES`; a larger one is refused with
the sentence pointing at `punchgate export` on the gateway. Each download is logged and
appended to the audit chain with the account that made it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import structlog
from aiohttp import web

from punchgate.gateway.console.health_view import zone
from punchgate.gateway.console.pages_audit import record_action
from punchgate.gateway.console.render import SECURITY_HEADERS, Page, render, site_zone
from punchgate.gateway.console.state import Console

log = structlog.get_logger(__name__)

MAX_EXPORT_BYTES = 64 * 1024 * 1024  # larger: `punchgate export` on the gateway writes it to a file
EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _exports_page(
    console: Console, page: Page, request: web.Request, *, status: int = 200, error: str = ""
) -> web.Response:
    assert console.gateway is not None
    today = dt.datetime.now(zone(site_zone(console))).date()
    shown = {
        "from": request.query.get("from") or today.replace(day=1).isoformat(),
        "to": request.query.get("to") or today.isoformat(),
        "terminal": request.query.get("terminal", ""),
        "user": request.query.get("user", ""),
        "format": request.query.get("format", "xlsx"),
    }
    terminals = [t.name for t in console.gateway.settings.terminals]
    return render(
        console,
        page,
        "exports.html",
        status,
        shown=shown,
        terminals=terminals,
        formats=list(EXPORT_TYPES),
        error=error,
    )


def exports_get(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _exports_page(console, page, request)


def export_download(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    """The export as a download: written to a private temporary folder, read back, removed."""
    assert console.gateway is not None and page.account is not None
    import tempfile

    from punchgate.sync.export import ExportError, ExportQuery, export, parse_bound

    query, settings = request.query, console.gateway.settings
    fmt = query.get("format", "xlsx")
    if fmt not in EXPORT_TYPES:
        return _exports_page(
            console, page, request, status=400, error=f"format must be one of {', '.join(EXPORT_TYPES)}"
        )
    try:
        wanted = ExportQuery(
            start=parse_bound(query.get("from", ""), end=False),
            end=parse_bound(query.get("to", ""), end=True),
            devices=[query["terminal"]] if query.get("terminal") else [],
            users=[query["user"].strip()] if query.get("user", "").strip() else [],
        )
        name = f"punches-{query.get('from', '')}-{query.get('to', '')}.{fmt}".replace("/", "-")
        with tempfile.TemporaryDirectory(prefix="punchgate-export-") as folder:
            out = Path(folder) / name
            result = export(
                Path(settings.buffer.path),
                wanted,
                out,
                fmt,  # type: ignore[arg-type]  # checked against EXPORT_TYPES above
                known_devices=[t.name for t in settings.terminals],
            )
            if out.stat().st_size > MAX_EXPORT_BYTES:
                raise ExportError(
                    "the export is too large to download here: use punchgate export on the gateway"
                )
            body = out.read_bytes()
    except (ExportError, OSError) as exc:
        return _exports_page(console, page, request, status=400, error=str(exc))
    log.info("console_export", account=page.account.name, rows=result.rows, format=fmt, range=name)
    record_action(
        console,
        "export",
        {
            "by": page.account.name,
            "from": query.get("from"),
            "to": query.get("to"),
            "rows": result.rows,
            "format": fmt,
        },
    )
    return web.Response(
        body=body,
        headers={
            "Content-Type": EXPORT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{name}"',
            **SECURITY_HEADERS,
        },
    )
