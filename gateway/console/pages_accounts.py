"""Accounts in the console: one's own password (/account) and the admin's list (/accounts).

Changing one's password needs the current one and ends every session of the account (its
generation changes), so the browser is sent to sign in again. An admin adds, disables and
enables accounts, but never disables their own. Every change is logged and appended to the
audit chain with the account that made it; the password rules are `accounts.check_password`.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiohttp import web

from punchgate.gateway.console.accounts import PERMISSIONS, ROLES, AccountError, check_password
from punchgate.gateway.console.pages_audit import record_action
from punchgate.gateway.console.render import Page, redirect, render
from punchgate.gateway.console.sessions import SESSION_COOKIE
from punchgate.gateway.console.state import Console

log = structlog.get_logger(__name__)


def account_page(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return render(console, page, "account.html", error="")


def change_password(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    assert page.account is not None and console.accounts is not None
    account = page.account
    new, repeat = form.get("new", ""), form.get("repeat", "")
    _found, outcome = console.accounts.verify(account.name, form.get("current", ""))
    if outcome != "ok":
        log.warning("console_password_change_refused", account=account.name, reason=outcome)
        return render(console, page, "account.html", 400, error=page.words("account.wrong"))
    if new != repeat:
        return render(console, page, "account.html", 400, error=page.words("account.mismatch"))
    try:
        check_password(account.name, new)
    except AccountError as exc:
        return render(console, page, "account.html", 400, error=str(exc))
    console.accounts.set_password(account.name, new)
    log.info("console_password_changed", account=account.name, by=account.name)
    record_action(console, "account_password", {"account": account.name, "by": account.name})
    response = redirect("/login?changed=1")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _accounts_page(
    console: Console,
    page: Page,
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
) -> web.Response:
    assert console.accounts is not None
    return render(
        console,
        page,
        "accounts.html",
        status,
        accounts=console.accounts.all(),
        roles=ROLES,
        permissions=PERMISSIONS,
        error=error,
        notice=notice,
    )


def accounts_get(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _accounts_page(console, page, request)


def accounts_add(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    assert console.accounts is not None and page.account is not None
    name, role = form.get("name", "").strip(), form.get("role", "")
    try:
        console.accounts.add(name, role, form.get("password", ""))
    except AccountError as exc:
        return _accounts_page(console, page, request, status=400, error=str(exc))
    log.info("console_account_added", account=name, role=role, by=page.account.name)
    record_action(console, "account_added", {"account": name, "role": role, "by": page.account.name})
    return _accounts_page(console, page, request, notice=page.words("accounts.created", name=name))


def accounts_state(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    assert console.accounts is not None and page.account is not None
    name = request.match_info["name"]
    disable = form.get("disabled") == "1"
    if disable and name.lower() == page.account.name.lower():
        return _accounts_page(console, page, request, status=400, error=page.words("accounts.self"))
    try:
        console.accounts.set_disabled(name, disable)
    except AccountError as exc:
        return _accounts_page(console, page, request, status=404, error=str(exc))
    log.info("console_account_changed", account=name, disabled=disable, by=page.account.name)
    record_action(
        console,
        "account_disabled" if disable else "account_enabled",
        {"account": name, "by": page.account.name},
    )
    return _accounts_page(console, page, request, notice=page.words("accounts.changed", name=name))
