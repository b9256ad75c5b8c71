"""The console's routes: the table of its pages on the daemon's HTTP server, and its static files.

`add_routes(app, console)` puts them on the aiohttp application that `punchgate.gateway.http`
builds, behind the same middlewares (Host and Origin checks, request and connection limits,
body size and time); their names start with `console.` (`is_console_route`), which is how the
API's token check leaves the console's own forms to their session and CSRF checks. Pages are
Jinja2 templates with autoescaping on, rendered on the API's threads together with the store
queries they need, so the event loop never waits for them. The only script is
static/refresh.js, which swaps the overview's tiles in place every few seconds; everything
works without it.

Each page lives in the module of its job, and each route names the permission it needs
(punchgate.gateway.console.accounts.PERMISSIONS), checked with the session and, for a POST, the
CSRF token by `access.page_handler` / `access.post_handler`:

    pages_signin.py    /login, /logout
    pages_overview.py  /, /fragments/overview, /terminals/NAME
    pages_commands.py  /terminals/NAME/commands (an admin's remote command), /commands/ID (its outcome)
    pages_punches.py   /punches
    pages_manual.py    /manual (make-up punches)
    pages_exports.py   /exports
    pages_audit.py     /audit, and the console's entries in the audit chain
    pages_accounts.py  /account, /accounts

`Console`, `CONSOLE`, `api_admin` and `REFRESH_SECONDS` are importable from here, as before.
"""

from __future__ import annotations

from aiohttp import web

from punchgate.gateway.console import (
    pages_accounts,
    pages_audit,
    pages_commands,
    pages_exports,
    pages_manual,
    pages_overview,
    pages_punches,
    pages_signin,
)
from punchgate.gateway.console.access import api_admin, async_post_handler, page_handler, post_handler
from punchgate.gateway.console.pages_overview import REFRESH_SECONDS
from punchgate.gateway.console.state import CONSOLE, Console

__all__ = [
    "CONSOLE",
    "REFRESH_SECONDS",
    "ROUTE_PREFIX",
    "Console",
    "add_routes",
    "api_admin",
    "is_console_route",
]

ROUTE_PREFIX = "console."


def is_console_route(request: web.Request) -> bool:
    name = request.match_info.route.name
    return bool(name and name.startswith(ROUTE_PREFIX))


async def _static(request: web.Request) -> web.StreamResponse:
    found = request.app[CONSOLE].static.get(request.match_info["file"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(
        body=body,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "max-age=300",
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_routes(app: web.Application, console: Console) -> None:
    """The console's routes on the API's application (names start with `console.`)."""
    app[CONSOLE] = console
    p = ROUTE_PREFIX
    app.add_routes(
        [
            web.get("/login", pages_signin.login_get, name=p + "login"),
            web.post("/login", pages_signin.login_post, name=p + "login_post"),
            web.post("/logout", post_handler("view", pages_signin.logout), name=p + "logout"),
            web.get("/", page_handler("view", pages_overview.overview), name=p + "overview"),
            web.get(
                "/fragments/overview",
                page_handler("view", pages_overview.overview_fragment),
                name=p + "fragment",
            ),
            web.get("/terminals/{name}", page_handler("view", pages_overview.terminal), name=p + "terminal"),
            web.post(
                "/terminals/{name}/commands",
                async_post_handler("commands", pages_commands.command_post),
                name=p + "command",
            ),
            web.get(
                "/commands/{request_id:.+}",
                page_handler("commands", pages_commands.outcome_page),
                name=p + "command_outcome",
            ),
            web.get(
                "/fragments/commands/{request_id:.+}",
                page_handler("commands", pages_commands.outcome_fragment),
                name=p + "command_fragment",
            ),
            web.get("/punches", page_handler("view", pages_punches.punches), name=p + "punches"),
            web.get("/audit", page_handler("audit", pages_audit.audit_page), name=p + "audit"),
            web.get("/exports", page_handler("export", pages_exports.exports_get), name=p + "exports"),
            web.get(
                "/exports/download",
                page_handler("export", pages_exports.export_download),
                name=p + "export_download",
            ),
            web.get("/manual", page_handler("manual_enter", pages_manual.manual_get), name=p + "manual"),
            web.post("/manual", post_handler("manual_enter", pages_manual.manual_add), name=p + "manual_add"),
            web.post(
                "/manual/{entry_id}/approve",
                post_handler("manual_decide", pages_manual.manual_decide(True)),
                name=p + "manual_approve",
            ),
            web.post(
                "/manual/{entry_id}/reject",
                post_handler("manual_decide", pages_manual.manual_decide(False)),
                name=p + "manual_reject",
            ),
            web.get("/account", page_handler("view", pages_accounts.account_page), name=p + "account"),
            web.post(
                "/account/password", post_handler("view", pages_accounts.change_password), name=p + "password"
            ),
            web.get("/accounts", page_handler("accounts", pages_accounts.accounts_get), name=p + "accounts"),
            web.post(
                "/accounts", post_handler("accounts", pages_accounts.accounts_add), name=p + "accounts_add"
            ),
            web.post(
                "/accounts/{name}/disabled",
                post_handler("accounts", pages_accounts.accounts_state),
                name=p + "accounts_state",
            ),
            web.get("/static/{file}", _static, name=p + "static"),
        ]
    )
