"""How a console page becomes an answer: the values every template gets, and the headers.

`Page` carries the request's language, account and CSRF token; `render` fills a template with
them and the page's own values. Every answer (`html`, `redirect`) carries `SECURITY_HEADERS`:
a Content-Security-Policy that allows only the console's own script and style, no framing,
forms only to itself, and no caching. `Answer` lets code deep inside a page finish the request
early (a sign-in redirect, a 403). The navigation shows only what the account may open.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from punchgate.gateway.console.accounts import Account, Permission
from punchgate.gateway.console.health_view import FaultView, local_text, parse_utc, zone, zone_label
from punchgate.gateway.console.i18n import Words
from punchgate.gateway.console.state import Console

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV: tuple[tuple[str, str, Permission], ...] = (
    ("/", "nav.overview", "view"),
    ("/punches", "nav.punches", "view"),
    ("/manual", "nav.manual", "manual_enter"),
    ("/exports", "nav.exports", "export"),
    ("/audit", "nav.audit", "audit"),
    ("/accounts", "nav.accounts", "accounts"),
)


class Answer(Exception):
    """A finished response from deep inside a page (a redirect, a 403)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__()
        self.response = response


@dataclass
class Page:
    """The request's language, account and CSRF token, and the values every template uses."""

    words: Words
    account: Account | None
    csrf: str
    path: str
    tz_name: str
    values: dict[str, Any] = field(default_factory=dict)

    def template_values(self, console: Console) -> dict[str, Any]:
        account = self.account
        tz = zone(self.tz_name)
        nav = [
            {"href": href, "label": self.words(key), "current": self.path == href}
            for href, key, permission in NAV
            if account is not None and account.may(permission)
        ]
        gateway = console.gateway
        return {
            "t": self.words,
            "lang": self.words.lang,
            "account": account,
            "role_name": self.words(f"role.{account.role}") if account else "",
            "csrf": self.csrf,
            "nav": nav,
            "path": self.path,
            "zone_label": zone_label(tz),
            "gateway_id": gateway.settings.gateway_id if gateway else "",
            "site": gateway.settings.site if gateway else "",
            "local": lambda value, seconds=True: local_text(value, tz, seconds=seconds),
            "ago": lambda value: self.words.ago(_age(value)),
            "fault_summary": lambda f: self._fault_text(f, "fault", f.summary),
            "fault_do": lambda f: self._fault_text(f, "do", f.what_to_do),
            "state_name": lambda state: self.words(f"state.{state}"),
            **self.values,
        }

    def _fault_text(self, fault: FaultView, kind: str, english: str) -> str:
        key = f"{kind}.{fault.code}"
        return self.words(key) if self.words.lang != "en" and self.words.has(key) else english


def _age(value: Any) -> float | None:
    when = parse_utc(value)
    return None if when is None else (dt.datetime.now(dt.UTC) - when).total_seconds()


def site_zone(console: Console) -> str:
    return console.gateway.settings.timezone if console.gateway else "UTC"


def html(body: str, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=body.encode(),
        headers={"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS, **headers},
    )


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def render(console: Console, page: Page, template: str, status: int = 200, **values: Any) -> web.Response:
    page.values.update(values)
    body = console.env.get_template(template).render(page.template_values(console))
    return html(body, status)
