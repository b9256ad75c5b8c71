"""The console in a real browser: Debian's Chromium under Playwright, against a real gateway
daemon reading emulated ZK terminals over loopback, with a real broker.

One short test runs by default; the rest are `long` (./dev test-long), sharing one site.
Screenshots go under pytest's tmp folder; their paths are printed (run with -s to see them).
"""

from __future__ import annotations

import csv
import datetime as dt
import http.server
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from punchgate.gateway.console.accounts import Accounts
from punchgate.gateway.console.web import REFRESH_SECONDS
from tests.console.site import PASSWORD, PHONE, Site, screenshot
from tests.health.rig import api_devices
from tests.support.broker import free_port
from tests.support.subscriber import Subscriber

NAV = {
    "viewer": ["Overview", "Punches"],
    "clerk": ["Overview", "Punches", "Make-up punches", "Exports"],
    "approver": ["Overview", "Punches", "Make-up punches", "Exports", "Audit"],
    "admin": ["Overview", "Punches", "Make-up punches", "Exports", "Audit", "Accounts"],
}


def _nav(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("header nav a").all_inner_texts()]


def test_a_viewer_signs_in_and_sees_every_terminal(tmp_path: Path) -> None:
    with Site.start(tmp_path) as site:
        page = site.new_page()
        page.goto(site.url + "/")
        assert page.url.startswith(site.url + "/login")  # nobody sees anything before signing in
        site.sign_in(page, "viewer")
        tiles = page.locator(".tile h3 a")
        assert sorted(tiles.all_inner_texts()) == ["gate-a", "gate-b"]
        assert _nav(page) == NAV["viewer"]
        assert "Times in Asia/Shanghai (UTC+08:00)" in page.locator("footer").inner_text()
        screenshot(page, tmp_path / "screenshots", "overview-viewer-desktop")
        response = page.goto(site.url + "/accounts")
        assert response is not None and response.status == 403


# --- the long runs: one site for all ------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with Site.start(tmp_path_factory.mktemp("console-site")) as running:
        yield running


@pytest.mark.long
@pytest.mark.parametrize("role", ["viewer", "clerk", "approver", "admin"])
def test_each_role_sees_only_what_it_may(site: Site, role: str) -> None:
    page = site.new_page()
    site.sign_in(page, role)
    assert _nav(page) == NAV[role]
    checks = (
        ("/punches", True),
        ("/terminals/gate-a", True),
        ("/manual", role != "viewer"),
        ("/exports", role != "viewer"),
        ("/audit", role in ("approver", "admin")),
        ("/accounts", role == "admin"),
    )
    for path, allowed in checks:
        response = page.goto(site.url + path)
        assert response is not None and response.status == (200 if allowed else 403), (role, path)
    page.context.close()


@pytest.mark.long
def test_an_admin_adds_an_account_and_the_audit_chain_names_who(site: Site) -> None:
    page = site.new_page()
    site.sign_in(page, "admin")
    page.goto(site.url + "/accounts")
    form = page.locator("form.search")
    form.get_by_label("Name").fill("supervisor-1")
    form.get_by_label("Role").select_option("approver")
    form.get_by_label("Initial password").fill(PASSWORD)
    form.get_by_role("button", name="Create").click()
    page.get_by_text("Account supervisor-1 created.").wait_for()
    page.goto(site.url + "/audit?verify=1")
    assert "The chain is intact" in page.inner_text("main")
    row = page.locator("tbody tr", has=page.locator("code", has_text="account_added")).first
    assert "admin" in row.inner_text() and "supervisor-1" in row.inner_text()
    page.context.close()


def _enter_make_up(site: Site, page: Any, user: str, hour: int) -> None:
    when = dt.datetime.now(ZoneInfo("UTC")).replace(hour=hour, minute=5, second=0, microsecond=0)
    if when > dt.datetime.now(ZoneInfo("UTC")):
        when -= dt.timedelta(days=1)
    page.goto(site.url + "/manual")
    form = page.locator("#enter")
    form.get_by_label("Terminal", exact=True).select_option("gate-a")
    form.get_by_label("User id").fill(user)
    form.get_by_label("Time at the terminal").fill(when.strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("State").select_option("check_in")
    form.get_by_label("Explanation").fill("the reader did not recognise her")
    form.get_by_role("button", name="Enter").click()
    page.get_by_text(f"Make-up punch for {user} at").wait_for()


@pytest.mark.long
def test_a_clerks_make_up_punch_approved_by_an_approver_reaches_the_broker(site: Site) -> None:
    subscriber = Subscriber(site.broker.host, site.broker.port, "#").start()
    try:
        clerk = site.new_page()
        site.sign_in(clerk, "clerk")
        _enter_make_up(site, clerk, "M-101", 3)
        assert clerk.get_by_role("button", name="Approve").count() == 0  # a clerk cannot decide
        approver = site.new_page()
        site.sign_in(approver, "approver")
        approver.goto(site.url + "/manual")
        entry = approver.locator(".tile", has_text="M-101")
        entry.get_by_role("button", name="Approve").click()
        approver.get_by_text("Make-up punch for M-101 at").wait_for()
        assert subscriber.wait_for(
            lambda: any(
                b'"manual"' in m.payload and b'"M-101"' in m.payload
                for m in subscriber.messages
                if m.topic.endswith("/punches")
            ),
            timeout=20,
        ), [m.topic for m in subscriber.messages][-10:]
        # Their own: the approver enters one and finds no Approve button, and a forged POST is refused.
        _enter_make_up(site, approver, "M-102", 4)
        own = approver.locator(".tile", has_text="M-102")
        assert own.get_by_role("button", name="Approve").count() == 0
        assert "another person decides it" in own.inner_text()
        assert "check_in" in own.inner_text()  # the state by name, not its code
        clerk.close()
        approver.context.close()
    finally:
        subscriber.stop()


@pytest.mark.long
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_clerk_downloads_an_export_that_opens(site: Site, fmt: str, tmp_path: Path) -> None:
    page = site.new_page()
    site.sign_in(page, "clerk")
    page.goto(site.url + "/exports")
    today = dt.date.today()
    page.get_by_label("From (day)").fill((today - dt.timedelta(days=7)).isoformat())
    page.get_by_label("To (day, included)").fill((today + dt.timedelta(days=1)).isoformat())
    page.get_by_label("Terminal").select_option("gate-a")
    page.get_by_label("Format").select_option(fmt)
    with page.expect_download() as waiting:
        page.get_by_role("button", name="Download").click()
    saved = tmp_path / waiting.value.suggested_filename
    waiting.value.save_as(saved)
    assert saved.suffix == f".{fmt}"
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8-sig"))))
        devices = {row["device"] for row in rows}
    else:
        import openpyxl  # type: ignore[import-untyped]  # no type information shipped

        book = openpyxl.load_workbook(saved, read_only=True)
        assert "gate-a" in book.sheetnames
        rows = list(book["gate-a"].iter_rows(min_row=2, values_only=True))
        devices = {"gate-a"}
    assert devices == {"gate-a"} and len(rows) >= len(site.terminals["gate-a"].records)
    page.context.close()


@pytest.mark.long
def test_punches_are_searched_and_paged_in_the_site_zone(site: Site) -> None:
    page = site.new_page()
    site.sign_in(page, "viewer")
    page.goto(site.url + "/punches")
    page.get_by_label("Terminal").select_option("gate-b")
    page.get_by_role("button", name="Search").click()
    records = len(site.terminals["gate-b"].records)
    page.get_by_text(f"{records} punches found").wait_for()
    assert records == 80 and page.get_by_text("Page 1 of 2").count() == 1  # 50 a page
    page.get_by_role("link", name="Older →").click()
    page.get_by_text("Page 2 of 2").wait_for()
    assert page.locator("tbody tr").count() == records - 50
    page.get_by_label("From (day)").fill("not-a-day")  # a date input refuses it; send it by URL
    page.goto(site.url + "/punches?from=2026-13-45")
    assert "is not a day" in page.locator(".error").inner_text()
    page.context.close()


@pytest.mark.long
def test_chinese_browsers_get_chinese(site: Site) -> None:
    page = site.new_page(locale="zh-CN")
    page.goto(site.url + "/login")
    page.get_by_label("账号").fill("viewer")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(site.url + "/")
    assert page.locator("h1").inner_text() == "总览" and "考勤机" in page.inner_text("main")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.context.close()


class _EvilSite:
    """Another origin on this machine whose page makes the browser POST to the console."""

    def __init__(self, target: str) -> None:
        form = (
            f'<form id="f" method="post" action="{target}/accounts">'
            '<input name="name" value="mallory"><input name="role" value="admin">'
            f'<input name="password" value="{PASSWORD}"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(form)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.long
def test_a_forged_cross_site_post_and_a_missing_csrf_token_are_refused(site: Site) -> None:
    page = site.new_page()
    site.sign_in(page, "admin")
    evil = _EvilSite(site.url)
    try:
        with page.expect_navigation(url=site.url + "/accounts"):
            page.goto(evil.url)
        assert "may not use this API" in page.inner_text("body")  # 403 on Origin, before any page
    finally:
        evil.close()
    missing = page.evaluate(
        """async (url) => {
            const body = new URLSearchParams({name: "mallory", role: "admin", password: "x".repeat(12)});
            const answer = await fetch(url + "/accounts", {method: "POST", body});
            return answer.status;
        }""",
        site.url,
    )
    assert missing == 403  # same origin, signed in, but no CSRF token in the form
    assert Accounts.beside_buffer(site.buffer_path, create=False).get("mallory") is None
    page.context.close()


@pytest.mark.long
def test_accessibility_basics_labels_and_keyboard(site: Site) -> None:
    page = site.new_page()
    page.goto(site.url + "/login")
    assert page.evaluate("document.activeElement.id") == "name"  # the form has the focus at once
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.className") == "skip"  # the skip link before it
    page.keyboard.press("Tab")
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(site.url + "/")
    unlabelled = """() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && !e.hidden)
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.name || e.id)"""
    for path in ("/", "/punches", "/terminals/gate-a", "/account", "/accounts", "/login"):
        page.goto(site.url + path)
        assert page.evaluate(unlabelled) == [], path
        assert page.locator("h1").count() == 1, path
    page.context.close()


@pytest.mark.long
def test_screenshots_at_desktop_and_phone_width(site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "screenshots"
    for width, viewport in (("desktop", None), ("phone", PHONE)):
        for lang, locale in (("en", "en-GB"), ("zh", "zh-CN")):
            page = site.new_page(viewport=viewport, locale=locale)
            page.goto(site.url + "/login")
            screenshot(page, folder, f"login-{lang}-{width}")
            page.locator("#name").fill("admin")
            page.locator("#password").fill(PASSWORD)
            page.locator("form.stack button").click()
            page.wait_for_url(site.url + "/")
            for name, path in (
                ("overview", "/"),
                ("terminal", "/terminals/gate-b"),
                ("punches", "/punches?terminal=gate-a"),
                ("accounts", "/accounts"),
                ("audit", "/audit"),
                ("manual", "/manual?status=all"),
                ("exports", "/exports"),
            ):
                page.goto(site.url + path)
                shot = screenshot(page, folder, f"{name}-{lang}-{width}")
                assert shot.stat().st_size > 5000
                if width == "phone":  # nothing wider than the phone but the tables' own scrollers
                    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
            page.context.close()


@pytest.mark.long
def test_a_terminal_fault_shows_on_the_overview_within_one_refresh(site: Site, tmp_path: Path) -> None:
    """Switched on in the emulator; once the gateway knows (its /api/devices says so), the open
    overview shows it as the tile's root cause at its next refresh, without a reload."""
    page = site.new_page()
    site.sign_in(page, "viewer")
    page.evaluate("window.__notReloaded = true")
    tile = page.locator(".tile", has=page.locator("a", has_text="gate-a"))
    assert "unreachable" not in tile.inner_text()
    emulator = site.terminals["gate-a"]
    site.farm.run(emulator.set_fault("refuse_connections"))
    site.farm.run(emulator.set_fault("restart", silent=False))  # drop the gateway's open session
    try:
        site.gateway.wait_until(
            lambda: any(f["code"] == "unreachable" for f in api_devices(site.url)["gate-a"]["faults"]),
            timeout=30,
            message="gate-a unreachable in /api/devices",
        )
        known = time.monotonic()
        tile.locator(".fault code", has_text="unreachable").wait_for(timeout=(REFRESH_SECONDS + 2) * 1000)
        took = time.monotonic() - known
        print(f"the overview showed the fault {took:.1f} s after the gateway knew it")
        assert page.evaluate("window.__notReloaded === true")  # refreshed in place
        text = tile.inner_text()
        assert (
            "offline" in text and "What to do:" in text and "check power, cable" in text and "since" in text
        )
        assert (
            tile.locator(".fault").first.locator("code").first.inner_text() == "unreachable"
        )  # root cause first
        screenshot(page, tmp_path / "screenshots", "overview-fault-desktop")
    finally:
        site.farm.run(emulator.clear_fault("refuse_connections"))
    page.context.close()
