"""Signing in and out of the console: the sign-in page, its form, the session cookie.

The sign-in form carries a CSRF token bound to a short-lived cookie of its own (there is no
session yet). Attempts are limited per name and per address (`sessions.LoginLimiter`): a
throttled attempt is refused (429) without checking the password. Failures, successes and
throttling are logged; an unknown name takes as long to refuse as a wrong password
(`Accounts.verify`). Cookies are HttpOnly, SameSite=Strict, and Secure over HTTPS. After
signing in, the browser goes back where it was headed, but only to a path of ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from punchgate.gateway.console.access import new_page, read_form, same_token, session_account
from punchgate.gateway.console.render import Page, redirect, render
from punchgate.gateway.console.sessions import LOGIN_COOKIE, SESSION_COOKIE
from punchgate.gateway.console.state import CONSOLE, Console

log = structlog.get_logger(__name__)

FIRST_ACCOUNT = "sudo punchgate user add NAME --role admin --config /etc/punchgate/punchgate.toml"


def set_cookie(response: web.StreamResponse, console: Console, name: str, value: str, **options: Any) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="Strict", secure=console.secure_cookies, path="/", **options
    )


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of ours only (never //host or a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 500:
        return "/"
    return value


def _login_page(
    console: Console,
    page: Page,
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
) -> web.Response:
    no_accounts = console.accounts is not None and console.accounts.count() == 0
    signer = console.signer
    cookie = signer.login_nonce_cookie() if signer else ""
    nonce = signer.login_nonce(cookie) if signer else None
    response = render(
        console,
        page,
        "login.html",
        status,
        error=error,
        notice=notice,
        unavailable=page.words("login.unavailable", problem=console.problem) if signer is None else "",
        no_accounts=no_accounts,
        login_csrf=signer.csrf_token("login:" + nonce) if signer and nonce else "",
        next=safe_next(request.query.get("next") or request.headers.get("X-Next")),
        first_account=FIRST_ACCOUNT,
    )
    if cookie:
        set_cookie(response, console, LOGIN_COOKIE, cookie, max_age=3600)
    return response


async def login_get(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]

    def work() -> web.StreamResponse:
        found = session_account(console, request)
        if found is not None:
            return redirect(safe_next(request.query.get("next")))
        page = new_page(console, request, None)
        notice = page.words("account.changed") if request.query.get("changed") else ""
        return _login_page(console, page, request, notice=notice)

    return await console.blocking(work)


async def login_post(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await read_form(request)
    page = new_page(console, request, None)
    address = request.remote or "?"
    signer, accounts = console.signer, console.accounts
    if signer is None or accounts is None:
        return await console.blocking(lambda: _login_page(console, page, request, status=503))
    nonce = signer.login_nonce(request.cookies.get(LOGIN_COOKIE))
    if nonce is None or not same_token(signer.csrf_token("login:" + nonce), form.get("csrf")):
        console.limited.warning("console_csrf_refused", key="console_csrf_refused", path=request.path)
        error = page.words("login.expired")
        return await console.blocking(lambda: _login_page(console, page, request, status=403, error=error))
    name = form.get("name", "").strip()[:64]
    password = form.get("password", "")
    wait = console.limiter.wait_seconds(name, address)
    if wait > 0:
        console.limited.warning(
            "console_login_throttled", key=f"console_login_throttled:{address}", account=name, address=address
        )
        error = page.words("login.throttled", minutes=max(1, round(wait / 60)))
        return await console.blocking(lambda: _login_page(console, page, request, status=429, error=error))
    account, outcome = await console.blocking(lambda: accounts.verify(name, password))
    if account is None or outcome != "ok":
        console.limiter.failed(name, address)
        log.warning("console_login_failed", account=name, address=address, reason=outcome)
        error = page.words("login.failed")
        return await console.blocking(lambda: _login_page(console, page, request, status=401, error=error))
    console.limiter.succeeded(name)
    log.info("console_login", account=account.name, role=account.role, address=address)
    cookie, _session = signer.session_cookie(account.name, account.generation)
    response = redirect(safe_next(form.get("next")))
    set_cookie(response, console, SESSION_COOKIE, cookie)
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


def logout(console: Console, page: Page, request: web.Request, form: Mapping[str, str]) -> web.StreamResponse:
    assert page.account is not None
    log.info("console_logout", account=page.account.name)
    response = redirect("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
