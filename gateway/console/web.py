"""The console's routes: server-rendered pages behind a sign-in, on the daemon's HTTP server.

`add_routes(app, console)` puts them on the aiohttp application that `punchgate.gateway.http`
builds, behind the same middlewares (Host and Origin checks, request and connection limits,
body size and time). Pages are Jinja2 templates with autoescaping on (a terminal or user name
can never become markup), rendered on the API's threads together with the store queries they
need, so the event loop never waits for them. The only script is static/refresh.js, which
swaps the overview's tiles in place every few seconds; everything works without it.

Every page needs a session (punchgate.gateway.console.sessions) whose account may do what the
page shows (punchgate.gateway.console.accounts.PERMISSIONS): otherwise a sign-in (303 to
/login) or 403. Every POST needs the session's CSRF token in the form (403 without). Answers
carry a Content-Security-Policy that allows only the console's own script and style, and
forbid framing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import shutil
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup, escape

from punchgate.gateway import __version__
from punchgate.gateway.console import punch_query
from punchgate.gateway.console.accounts import (
    PERMISSIONS,
    ROLES,
    Account,
    AccountError,
    Accounts,
    Permission,
    check_password,
)
from punchgate.gateway.console.health_view import (
    FaultView,
    drift_text,
    fill_text,
    gateway_view,
    local_text,
    parse_utc,
    terminal_views,
    zone,
    zone_label,
)
from punchgate.gateway.console.i18n import Words, language
from punchgate.gateway.console.keyfile import KeyFileError, ensure_session_key
from punchgate.gateway.console.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginLimiter,
    Signer,
)
from punchgate.gateway.ratelimit_log import RateLimitedLog
from punchgate.gateway.status import gateway_status

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)
T = TypeVar("T")

HERE = Path(__file__).parent
ROUTE_PREFIX = "console."
REFRESH_SECONDS = 5
RECENT_PUNCHES = 20
HISTORY_SHOWN = 50
FIRST_ACCOUNT = "sudo punchgate user add NAME --role admin --config /etc/punchgate/punchgate.toml"
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
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
NAV: tuple[tuple[str, str, Permission], ...] = (
    ("/", "nav.overview", "view"),
    ("/punches", "nav.punches", "view"),
    ("/manual", "nav.manual", "manual_enter"),
    ("/exports", "nav.exports", "export"),
    ("/audit", "nav.audit", "audit"),
    ("/accounts", "nav.accounts", "accounts"),
)


class _Answer(Exception):
    """A finished response from deep inside a page (a redirect, a 403)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__()
        self.response = response


@dataclass
class Console:
    """What the console's handlers share; built once per server (`Console.open`)."""

    accounts: Accounts | None
    signer: Signer | None
    problem: str = ""  # why signing in is unavailable (no key, no accounts file)
    secure_cookies: bool = False
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    limited: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))
    gateway: Application | None = None
    executor: Executor | None = None
    env: jinja2.Environment = field(default_factory=lambda: _environment())
    static: dict[str, tuple[bytes, str]] = field(default_factory=lambda: _static_files())

    @classmethod
    def open(cls, buffer_path: Path, *, secure_cookies: bool = False) -> Console:
        """The console for the buffer at `buffer_path`: its key and accounts file, created when
        missing. A problem with either leaves it `unavailable`, saying why, never raising."""
        try:
            key = ensure_session_key(buffer_path)
            accounts = Accounts.beside_buffer(buffer_path)
        except (KeyFileError, AccountError, OSError) as exc:
            problem = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror}: {exc.filename}"
            log.error("console_unavailable", problem=problem)
            return cls.unavailable(problem)
        return cls(accounts, Signer(key), secure_cookies=secure_cookies)

    @classmethod
    def unavailable(cls, problem: str) -> Console:
        return cls(None, None, problem=problem)

    def attach(self, gateway: Application, executor: Executor) -> None:
        self.gateway, self.executor = gateway, executor

    async def blocking(self, work: Callable[[], T]) -> T:
        """Run `work` on the API's threads (store queries, password hashing, rendering)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)


CONSOLE: web.AppKey[Console] = web.AppKey("console")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code"] = _code_spans
    return env


def _code_spans(text: str) -> Markup:
    """`name` in a sentence (docs' markdown) as <code>name</code>; everything else escaped."""
    parts = str(text).split("`")
    out = [escape(part) if i % 2 == 0 else Markup("<code>%s</code>") % part for i, part in enumerate(parts)]
    return Markup("").join(out)


def _static_files() -> dict[str, tuple[bytes, str]]:
    files = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.suffix in STATIC_TYPES:
            files[path.name] = (path.read_bytes(), STATIC_TYPES[path.suffix])
    return files


def is_console_route(request: web.Request) -> bool:
    name = request.match_info.route.name
    return bool(name and name.startswith(ROUTE_PREFIX))


# --- what every page knows -------------------------------------------------------------------
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


def _site_zone(console: Console) -> str:
    return console.gateway.settings.timezone if console.gateway else "UTC"


def _html(body: str, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=body.encode(),
        headers={"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS, **headers},
    )


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def _render(console: Console, page: Page, template: str, status: int = 200, **values: Any) -> web.Response:
    page.values.update(values)
    body = console.env.get_template(template).render(page.template_values(console))
    return _html(body, status)


def _session_account(console: Console, request: web.Request) -> tuple[Account, str] | None:
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


def _new_page(console: Console, request: web.Request, found: tuple[Account, str] | None) -> Page:
    account, nonce = found if found else (None, "")
    csrf = console.signer.csrf_token(nonce) if (console.signer and nonce) else ""
    return Page(
        Words(language(request.headers.get("Accept-Language"))),
        account,
        csrf,
        request.path,
        _site_zone(console),
    )


def _signed_in(console: Console, request: web.Request, permission: Permission) -> Page:
    """The page context of a signed-in account that may do `permission`; _Answer otherwise."""
    found = _session_account(console, request)
    page = _new_page(console, request, found)
    if page.account is None:
        if request.path.startswith("/fragments/"):
            raise _Answer(web.Response(status=401, text="sign in again\n", headers=SECURITY_HEADERS))
        target = request.path_qs if request.method == "GET" else "/"
        raise _Answer(_redirect("/login?" + urlencode({"next": target})))
    if not page.account.may(permission):
        body = console.env.get_template("error.html").render(
            page.template_values(console)
            | {"message": page.words("forbidden", role=page.words(f"role.{page.account.role}"))}
        )
        raise _Answer(_html(body, 403))
    return page


def _same_token(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and hmac.compare_digest(expected.encode(), given.encode())


async def _form(request: web.Request) -> Mapping[str, str]:
    data = await request.post()
    return {key: value for key, value in data.items() if isinstance(value, str)}


def _csrf_refusal(console: Console, page: Page, request: web.Request) -> web.Response:
    console.limited.warning(
        "console_csrf_refused",
        key="console_csrf_refused",
        path=request.path,
        account=page.account.name if page.account else None,
    )
    return _render(console, page, "error.html", 403, message=page.words("csrf"))


def _page_handler(
    permission: Permission, build: Callable[[Console, Page, web.Request], web.StreamResponse]
) -> Callable[[web.Request], Any]:
    """A GET page: session and permission checked, then `build` runs on the API's threads."""

    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]

        def work() -> web.StreamResponse:
            try:
                return build(console, _signed_in(console, request, permission), request)
            except _Answer as answer:
                return answer.response

        return await console.blocking(work)

    return handler


def _post_handler(
    permission: Permission,
    act: Callable[[Console, Page, web.Request, Mapping[str, str]], web.StreamResponse],
) -> Callable[[web.Request], Any]:
    """A POST: session, permission and CSRF token checked, then `act` runs on the API's threads."""

    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        form = await _form(request)

        def work() -> web.StreamResponse:
            try:
                page = _signed_in(console, request, permission)
            except _Answer as answer:
                return answer.response
            if not _same_token(page.csrf, form.get("csrf")):
                return _csrf_refusal(console, page, request)
            try:
                return act(console, page, request, form)
            except _Answer as answer:
                return answer.response

        return await console.blocking(work)

    return handler


def _set_cookie(
    response: web.StreamResponse, console: Console, name: str, value: str, **options: Any
) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="Strict", secure=console.secure_cookies, path="/", **options
    )


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of ours only (never //host or a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 500:
        return "/"
    return value


def _audit(console: Console, kind: str, data: dict[str, Any]) -> None:
    """Record an action in the buffer's audit chain when the store keeps one (docs/audit.md)."""
    store = console.gateway.store if console.gateway else None
    append = getattr(store, "audit_action", None)
    if append is None:
        return
    try:
        append(kind, data)
    except Exception:  # the action is done; a failed audit entry is logged, not undone
        log.exception("console_audit_failed", kind=kind)


# --- signing in and out ----------------------------------------------------------------------
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
    response = _render(
        console,
        page,
        "login.html",
        status,
        error=error,
        notice=notice,
        unavailable=page.words("login.unavailable", problem=console.problem) if signer is None else "",
        no_accounts=no_accounts,
        login_csrf=signer.csrf_token("login:" + nonce) if signer and nonce else "",
        next=_safe_next(request.query.get("next") or request.headers.get("X-Next")),
        first_account=FIRST_ACCOUNT,
    )
    if cookie:
        _set_cookie(response, console, LOGIN_COOKIE, cookie, max_age=3600)
    return response


async def _login_get(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]

    def work() -> web.StreamResponse:
        found = _session_account(console, request)
        if found is not None:
            return _redirect(_safe_next(request.query.get("next")))
        page = _new_page(console, request, None)
        notice = page.words("account.changed") if request.query.get("changed") else ""
        return _login_page(console, page, request, notice=notice)

    return await console.blocking(work)


async def _login_post(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await _form(request)
    page = _new_page(console, request, None)
    address = request.remote or "?"
    signer, accounts = console.signer, console.accounts
    if signer is None or accounts is None:
        return await console.blocking(lambda: _login_page(console, page, request, status=503))
    nonce = signer.login_nonce(request.cookies.get(LOGIN_COOKIE))
    if nonce is None or not _same_token(signer.csrf_token("login:" + nonce), form.get("csrf")):
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
    response = _redirect(_safe_next(form.get("next")))
    _set_cookie(response, console, SESSION_COOKIE, cookie)
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


def _logout(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    assert page.account is not None
    log.info("console_logout", account=page.account.name)
    response = _redirect("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# --- the overview ----------------------------------------------------------------------------
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


def _overview(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _render(console, page, "overview.html", **_overview_values(console))


def _overview_fragment(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _render(console, page, "_live.html", **_overview_values(console))


# --- one terminal ------------------------------------------------------------------------------
def _history(console: Console, name: str) -> list[Any]:
    history = getattr(console.gateway, "fault_history", None) or ()
    return [t for t in reversed(list(history)) if t.device == name][:HISTORY_SHOWN]


def _terminal(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    assert console.gateway is not None
    name = request.match_info["name"]
    status = gateway_status(console.gateway)
    found = [v for v in terminal_views(status) if v.name == name]
    if not found:
        return _render(console, page, "error.html", 404, message=page.words("terminal.unknown", name=name))
    recent, problem = _search(console, punch_query.PunchFilter(device=name), 1, RECENT_PUNCHES)
    return _render(
        console,
        page,
        "terminal.html",
        terminal=found[0],
        history=_history(console, name),
        recent=recent,
        problem=problem,
        drift_text=drift_text,
        fill_text=fill_text,
    )


# --- punches -----------------------------------------------------------------------------------
def _search(
    console: Console, flt: punch_query.PunchFilter, page_number: int, size: int
) -> tuple[punch_query.PunchPage | None, str]:
    assert console.gateway is not None
    try:
        found = punch_query.search(
            Path(console.gateway.settings.buffer.path),
            flt,
            zone(_site_zone(console)),
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


def _punches(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
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
    found, problem = (None, "") if errors else _search(console, flt, number, punch_query.PAGE_SIZE)
    shown = {k: query.get(k, "") for k in ("terminal", "user", "from", "to", "source")}

    def link(to_page: int) -> str:
        return "/punches?" + urlencode({**{k: v for k, v in shown.items() if v}, "page": to_page})

    return _render(
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


# --- make-up punches (punchgate.sync.manual; the rules: [manual]) --------------------------------
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
    return _render(
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


def _manual_get(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _manual_page(console, page, request)


def _manual_add(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    """Enter a make-up punch; the person entering it is the signed-in account, never a form field."""
    assert console.gateway is not None and page.account is not None
    from punchgate.gateway.manual_records import new_entry, punch_builder
    from punchgate.sync.manual import ManualRefused

    app, store = console.gateway, console.gateway.store
    if store is None:
        return _manual_page(console, page, request, status=503, error="starting", form=form)
    keys = ("device", "user_id", "local_time", "state", "reason_code", "reason")
    body: dict[str, Any] = {key: form.get(key, "") for key in keys}
    body["entered_by"] = page.account.name
    try:
        entry = new_entry(
            app.settings,
            lambda device: store.get_device_meta(device).get("serial_number", ""),
            body,
            now=dt.datetime.now(dt.UTC),
        )
        entry = store.add_manual(entry, app.settings.manual, punch_builder(app.settings))
    except ManualRefused as exc:
        return _manual_page(console, page, request, status=exc.status, error=str(exc), form=form)
    log.info(
        "manual_punch_entered",
        entry=entry.entry_id,
        device=entry.device,
        user=entry.user_id,
        local_time=entry.local_time,
        by=entry.entered_by,
        status=entry.status,
        via="console",
    )
    if entry.status == "approved" and app.forwarder is not None:
        app.forwarder.notify_new_punches()
    notice = page.words("manual.entered", user=entry.user_id, time=entry.local_time)
    return _manual_page(console, page, request, notice=notice)


def _manual_decide(
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


# --- exports (punchgate.sync.export: the same files as `punchgate export`) -------------------------
MAX_EXPORT_BYTES = 64 * 1024 * 1024  # larger: `punchgate export` on the gateway writes it to a file
EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _exports_page(
    console: Console, page: Page, request: web.Request, *, status: int = 200, error: str = ""
) -> web.Response:
    assert console.gateway is not None
    today = dt.datetime.now(zone(_site_zone(console))).date()
    shown = {
        "from": request.query.get("from") or today.replace(day=1).isoformat(),
        "to": request.query.get("to") or today.isoformat(),
        "terminal": request.query.get("terminal", ""),
        "user": request.query.get("user", ""),
        "format": request.query.get("format", "xlsx"),
    }
    terminals = [t.name for t in console.gateway.settings.terminals]
    return _render(
        console,
        page,
        "exports.html",
        status,
        shown=shown,
        terminals=terminals,
        formats=list(EXPORT_TYPES),
        error=error,
    )


def _exports_get(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _exports_page(console, page, request)


def _export_download(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
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
    _audit(
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


# --- the audit chain -------------------------------------------------------------------------------
def _audit_page(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
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
    return _render(console, page, "audit.html", view=view, report=report, problem=problem)


# --- accounts ----------------------------------------------------------------------------------
def _account_page(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _render(console, page, "account.html", error="")


def _change_password(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    assert page.account is not None and console.accounts is not None
    account = page.account
    new, repeat = form.get("new", ""), form.get("repeat", "")
    _found, outcome = console.accounts.verify(account.name, form.get("current", ""))
    if outcome != "ok":
        log.warning("console_password_change_refused", account=account.name, reason=outcome)
        return _render(console, page, "account.html", 400, error=page.words("account.wrong"))
    if new != repeat:
        return _render(console, page, "account.html", 400, error=page.words("account.mismatch"))
    try:
        check_password(account.name, new)
    except AccountError as exc:
        return _render(console, page, "account.html", 400, error=str(exc))
    console.accounts.set_password(account.name, new)
    log.info("console_password_changed", account=account.name, by=account.name)
    _audit(console, "account_password", {"account": account.name, "by": account.name})
    response = _redirect("/login?changed=1")
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
    return _render(
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


def _accounts_get(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    return _accounts_page(console, page, request)


def _accounts_add(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    assert console.accounts is not None and page.account is not None
    name, role = form.get("name", "").strip(), form.get("role", "")
    try:
        console.accounts.add(name, role, form.get("password", ""))
    except AccountError as exc:
        return _accounts_page(console, page, request, status=400, error=str(exc))
    log.info("console_account_added", account=name, role=role, by=page.account.name)
    _audit(console, "account_added", {"account": name, "role": role, "by": page.account.name})
    return _accounts_page(console, page, request, notice=page.words("accounts.created", name=name))


def _accounts_state(
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
    _audit(
        console,
        "account_disabled" if disable else "account_enabled",
        {"account": name, "by": page.account.name},
    )
    return _accounts_page(console, page, request, notice=page.words("accounts.changed", name=name))


# --- static files and the JSON API's sessions --------------------------------------------------
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


async def api_admin(request: web.Request) -> str | None:
    """The admin account behind a JSON API request that carries a console session instead of
    the token: its session cookie, and the session's CSRF token in `X-CSRF-Token` (a form
    cannot set that header). None when there is no such session."""
    console = request.app.get(CONSOLE)
    if console is None or console.signer is None or SESSION_COOKIE not in request.cookies:
        return None
    found = await console.blocking(lambda: _session_account(console, request))
    if found is None:
        return None
    account, nonce = found
    if not account.may("commands") or not _same_token(
        console.signer.csrf_token(nonce), request.headers.get("X-CSRF-Token")
    ):
        return None
    return account.name


def add_routes(app: web.Application, console: Console) -> None:
    """The console's routes on the API's application (names start with `console.`)."""
    app[CONSOLE] = console
    p = ROUTE_PREFIX
    app.add_routes(
        [
            web.get("/login", _login_get, name=p + "login"),
            web.post("/login", _login_post, name=p + "login_post"),
            web.post("/logout", _post_handler("view", _logout), name=p + "logout"),
            web.get("/", _page_handler("view", _overview), name=p + "overview"),
            web.get("/fragments/overview", _page_handler("view", _overview_fragment), name=p + "fragment"),
            web.get("/terminals/{name}", _page_handler("view", _terminal), name=p + "terminal"),
            web.get("/punches", _page_handler("view", _punches), name=p + "punches"),
            web.get("/audit", _page_handler("audit", _audit_page), name=p + "audit"),
            web.get("/exports", _page_handler("export", _exports_get), name=p + "exports"),
            web.get(
                "/exports/download", _page_handler("export", _export_download), name=p + "export_download"
            ),
            web.get("/manual", _page_handler("manual_enter", _manual_get), name=p + "manual"),
            web.post("/manual", _post_handler("manual_enter", _manual_add), name=p + "manual_add"),
            web.post(
                "/manual/{entry_id}/approve",
                _post_handler("manual_decide", _manual_decide(True)),
                name=p + "manual_approve",
            ),
            web.post(
                "/manual/{entry_id}/reject",
                _post_handler("manual_decide", _manual_decide(False)),
                name=p + "manual_reject",
            ),
            web.get("/account", _page_handler("view", _account_page), name=p + "account"),
            web.post("/account/password", _post_handler("view", _change_password), name=p + "password"),
            web.get("/accounts", _page_handler("accounts", _accounts_get), name=p + "accounts"),
            web.post("/accounts", _post_handler("accounts", _accounts_add), name=p + "accounts_add"),
            web.post(
                "/accounts/{name}/disabled",
                _post_handler("accounts", _accounts_state),
                name=p + "accounts_state",
            ),
            web.get("/static/{file}", _static, name=p + "static"),
        ]
    )
