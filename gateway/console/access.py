"""Who may open a console page: the session behind a request, its permission, its CSRF token.

Every page needs a session (punchgate.gateway.console.sessions) of an enabled account whose
generation still matches (a new password or a disabled account ends its sessions at once),
and the account must be allowed what the page shows
(punchgate.gateway.console.accounts.PERMISSIONS): otherwise a sign-in (303 to /login; 401 for
the overview's refresh fragment) or 403. Every POST also needs the session's CSRF token in the
form (403 without). `page_handler` and `post_handler` (`async_post_handler` for a page that
waits on the event loop) wrap each page's function in these checks
and run it on the API's threads. `api_admin` is the same check for a JSON API request that
carries an admin's session instead of the API token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from punchgate.gateway.console.accounts import Account, Permission
from punchgate.gateway.console.i18n import Words, language
from punchgate.gateway.console.render import (
    SECURITY_HEADERS,
    Answer,
    Page,
    html,
    redirect,
    render,
    site_zone,
)
from punchgate.gateway.console.sessions import SESSION_COOKIE
from punchgate.gateway.console.state import CONSOLE, Console


def session_account(console: Console, request: web.Request) -> tuple[Account, str] | None:
    """(account, session nonce) for a good session cookie of an enabled account; None otherwise.
    Blocking (reads the accounts file): call on the API's threads."""
    if console.signer is None or console.accounts is None:
        return None
    session = console.signer.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    account = console.accounts.get(session.name)
    if account is None or account.disabled or account.generation != session.generation:
        return None
    return account, session.nonce


def new_page(console: Console, request: web.Request, found: tuple[Account, str] | None) -> Page:
    account, nonce = found if found else (None, "")
    csrf = console.signer.csrf_token(nonce) if (console.signer and nonce) else ""
    return Page(
        Words(language(request.headers.get("Accept-Language"))),
        account,
        csrf,
        request.path,
        site_zone(console),
    )


def _signed_in(console: Console, request: web.Request, permission: Permission) -> Page:
    """The page context of a signed-in account that may do `permission`; Answer otherwise."""
    found = session_account(console, request)
    page = new_page(console, request, found)
    if page.account is None:
        if request.path.startswith("/fragments/"):
            raise Answer(web.Response(status=401, text="sign in again\n", headers=SECURITY_HEADERS))
        target = request.path_qs if request.method == "GET" else "/"
        raise Answer(redirect("/login?" + urlencode({"next": target})))
    if not page.account.may(permission):
        body = console.env.get_template("error.html").render(
            page.template_values(console)
            | {"message": page.words("forbidden", role=page.words(f"role.{page.account.role}"))}
        )
        raise Answer(html(body, 403))
    return page


def same_token(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and hmac.compare_digest(expected.encode(), given.encode())


async def read_form(request: web.Request) -> Mapping[str, str]:
    data = await request.post()
    return {key: value for key, value in data.items() if isinstance(value, str)}


def _csrf_refusal(console: Console, page: Page, request: web.Request) -> web.Response:
    console.limited.warning(
        "console_csrf_refused",
        key="console_csrf_refused",
        path=request.path,
        account=page.account.name if page.account else None,
    )
    return render(console, page, "error.html", 403, message=page.words("csrf"))


def page_handler(
    permission: Permission, build: Callable[[Console, Page, web.Request], web.StreamResponse]
) -> Callable[[web.Request], Any]:
    """A GET page: session and permission checked, then `build` runs on the API's threads."""

    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]

        def work() -> web.StreamResponse:
            try:
                return build(console, _signed_in(console, request, permission), request)
            except Answer as answer:
                return answer.response

        return await console.blocking(work)

    return handler


def post_handler(
    permission: Permission,
    act: Callable[[Console, Page, web.Request, Mapping[str, str]], web.StreamResponse],
) -> Callable[[web.Request], Any]:
    """A POST: session, permission and CSRF token checked, then `act` runs on the API's threads."""

    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        form = await read_form(request)

        def work() -> web.StreamResponse:
            checked = _checked_post(console, request, permission, form)
            if not isinstance(checked, Page):
                return checked
            try:
                return act(console, checked, request, form)
            except Answer as answer:
                return answer.response

        return await console.blocking(work)

    return handler


def _checked_post(
    console: Console, request: web.Request, permission: Permission, form: Mapping[str, str]
) -> Page | web.StreamResponse:
    """The page context of a POST whose session, permission and CSRF token are good; else the refusal."""
    try:
        page = _signed_in(console, request, permission)
    except Answer as answer:
        return answer.response
    if not same_token(page.csrf, form.get("csrf")):
        return _csrf_refusal(console, page, request)
    return page


def async_post_handler(
    permission: Permission,
    act: Callable[[Console, Page, web.Request, Mapping[str, str]], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Any]:
    """A POST like `post_handler`'s, whose `act` runs on the event loop: for a page that waits on
    the gateway's own tasks (a remote command), rendering on the API's threads by itself."""

    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        form = await read_form(request)
        checked = await console.blocking(lambda: _checked_post(console, request, permission, form))
        if not isinstance(checked, Page):
            return checked
        try:
            return await act(console, checked, request, form)
        except Answer as answer:
            return answer.response

    return handler


async def api_admin(request: web.Request) -> str | None:
    """The admin account behind a JSON API request that carries a console session instead of
    the token: its session cookie, and the session's CSRF token in `X-CSRF-Token` (a form
    cannot set that header). None when there is no such session."""
    console = request.app.get(CONSOLE)
    if console is None or console.signer is None or SESSION_COOKIE not in request.cookies:
        return None
    found = await console.blocking(lambda: session_account(console, request))
    if found is None:
        return None
    account, nonce = found
    if not account.may("commands") or not same_token(
        console.signer.csrf_token(nonce), request.headers.get("X-CSRF-Token")
    ):
        return None
    return account.name
