"""Remote commands from the console, against a real gateway daemon (tests.console.site): a real
broker, an emulated ZK terminal over loopback, the console over a real socket and, for one test,
Debian's Chromium under Playwright.

The site allows device.info, device.read_now, device.restart, log.clear and punches.resend; users.list is
offered by the console but left out of the allow list, so its refusal can be seen.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from punchgate.gateway.console.i18n import Words
from punchgate.gateway.console.pages_commands import _args
from punchgate.gateway.console.punch_query import AuditEntry, audit_view
from punchgate.gateway.console.render import Page
from tests.console.site import TIMEZONE, Site, screenshot
from tests.console.test_console_http import _client, _csrf, _sign_in
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until

ALLOW = ["device.info", "device.read_now", "device.restart", "log.clear", "punches.resend"]
TERMINAL = "gate-a"
BUTTON = re.compile(r'name="command" value="([^"]+)"')
REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with Site.start(
        tmp_path_factory.mktemp("commands-site"), terminals=(TERMINAL,), commands={"allow": ALLOW}
    ) as running:
        yield running


def _audit(site: Site, request_id: str) -> list[AuditEntry]:
    """The audit chain's entries about one request (read-only, as the console reads it)."""
    return [e for e in audit_view(site.buffer_path, actions=500).actions if f"id={request_id}," in e.summary]


def _kinds(site: Site, request_id: str) -> list[str]:
    return sorted(e.kind for e in _audit(site, request_id))


async def _terminal_page(client: aiohttp.ClientSession, site: Site) -> str:
    async with client.get(f"{site.url}/terminals/{TERMINAL}") as response:
        assert response.status == 200
        return await response.text()


async def _post(
    client: aiohttp.ClientSession, site: Site, form: dict[str, str]
) -> tuple[int, str, str | None]:
    async with client.post(
        f"{site.url}/terminals/{TERMINAL}/commands", data=form, allow_redirects=False
    ) as response:
        return response.status, await response.text(), response.headers.get("Location")


async def test_only_an_admin_sees_the_allowed_commands_and_may_post_them(site: Site) -> None:
    async with _client() as client:
        assert await _sign_in(client, site.url, "admin") == 303
        page = await _terminal_page(client, site)
        # The allow list, in the console's order; users.list is offered here but not allowed.
        assert BUTTON.findall(page) == [
            "device.info",
            "device.read_now",
            "punches.resend",
            "device.restart",
            "log.clear",
        ]
        async with client.get(
            f"{site.url}/terminals/{TERMINAL}", headers={"Accept-Language": "zh-CN,zh;q=0.9"}
        ) as response:
            chinese = await response.text()
        assert "远程命令" in chinese and "读取考勤机信息" in chinese
    for role in ("viewer", "clerk", "approver"):
        async with _client() as client:
            assert await _sign_in(client, site.url, role) == 303
            page = await _terminal_page(client, site)
            assert 'name="command"' not in page and "/commands" not in page, role
            token = await _csrf(client, f"{site.url}/terminals/{TERMINAL}")
            request_id = f"forged-{role}"
            form = {"csrf": token, "command": "device.info", "request_id": request_id}
            status, _body, _location = await _post(client, site, form)
            assert status == 403, role  # its own valid CSRF token does not make it an admin
            async with client.get(f"{site.url}/commands/{request_id}") as response:
                assert response.status == 403, role
            assert _audit(site, request_id) == [], role  # nothing reached the command service


async def test_an_admins_device_info_runs_once_through_the_command_service(site: Site) -> None:
    subscriber = Subscriber(site.broker.host, site.broker.port, "#").start()
    try:
        async with _client() as client:
            assert await _sign_in(client, site.url, "admin") == 303
            page = await _terminal_page(client, site)
            token = await _csrf(client, f"{site.url}/terminals/{TERMINAL}")
            ids = dict(zip(BUTTON.findall(page), REQUEST_ID.findall(page), strict=True))
            request_id = ids["device.info"]
            form = {"csrf": token, "command": "device.info", "request_id": request_id}
            status, _body, location = await _post(client, site, form)
            assert (status, location) == (303, f"/commands/{request_id}")
            wait_until(
                lambda: "command_done" in _kinds(site, request_id),
                timeout=30,
                message=lambda: f"device.info done; audit: {_kinds(site, request_id)}",
            )
            # The same form again (a double click, a resent POST): answered from the buffer, not run.
            assert (await _post(client, site, form))[2] == f"/commands/{request_id}"
            async with client.get(f"{site.url}{location}") as response:
                assert response.status == 200
                outcome = await response.text()
        serial = site.terminals[TERMINAL].serial_number
        assert "status-ok" in outcome and serial in outcome and "console:admin" in outcome
        entries = _audit(site, request_id)
        assert sorted(e.kind for e in entries) == ["command_accepted", "command_done"]  # once
        assert all(e.account == "console:admin" for e in entries), entries
        # Its answers went out like any other request's, below the gateway's response topic.
        assert subscriber.wait_for(
            lambda: any(
                m.topic.endswith("/commands/response/console")
                and m.json().get("id") == request_id
                and m.json().get("status") == "ok"
                for m in subscriber.messages
            ),
            timeout=20,
        ), [m.topic for m in subscriber.messages][-10:]
    finally:
        subscriber.stop()


async def test_refusals_csrf_allow_list_and_what_the_console_does_not_offer(site: Site) -> None:
    async with _client() as client:
        assert await _sign_in(client, site.url, "admin") == 303
        token = await _csrf(client, f"{site.url}/terminals/{TERMINAL}")
        status, _body, _location = await _post(
            client, site, {"command": "device.info", "request_id": "no-token"}
        )
        assert status == 403
        status, _body, _location = await _post(
            client, site, {"csrf": "x" * 32, "command": "device.info", "request_id": "other-token"}
        )
        assert status == 403
        assert _audit(site, "no-token") == [] and _audit(site, "other-token") == []
        # Offered by the console, not in the allow list: the command service refuses it, audited.
        form = {"csrf": token, "command": "users.list", "request_id": "not-allowed-1"}
        status, body, _location = await _post(client, site, form)
        assert status == 403 and "not_allowed" in body and "[commands] allow" in body
        [refused] = _audit(site, "not-allowed-1")
        assert refused.kind == "command_refused" and refused.account == "console:admin"
        # Not offered by the console at all (structured arguments): refused before the service.
        form = {"csrf": token, "command": "users.delete", "request_id": "not-offered-1"}
        status, body, _location = await _post(client, site, form)
        assert status == 400 and "punchgate command" in body
        assert _audit(site, "not-offered-1") == []


async def test_a_destructive_command_needs_its_confirmation(site: Site) -> None:
    async with _client() as client:
        assert await _sign_in(client, site.url, "admin") == 303
        token = await _csrf(client, f"{site.url}/terminals/{TERMINAL}")
        form = {"csrf": token, "command": "log.clear", "request_id": "clear-1"}
        status, body, _location = await _post(client, site, form)
        assert status == 200 and 'name="confirmed" value="yes"' in body and 'name="serial"' in body
        assert _audit(site, "clear-1") == []  # asking is not sending
        status, _body, location = await _post(client, site, {**form, "confirmed": "yes", "serial": "WRONG"})
        assert (status, location) == (303, "/commands/clear-1")
        wait_until(
            lambda: "command_done" in _kinds(site, "clear-1"), timeout=30, message="log.clear answered"
        )
        async with client.get(f"{site.url}{location}") as response:
            outcome = await response.text()
        # This terminal's config does not let the gateway clear it: the service's code and sentence.
        assert "status-error" in outcome and "clear_not_allowed" in outcome
        done = next(e for e in _audit(site, "clear-1") if e.kind == "command_done")
        assert "status=error" in done.summary


async def test_punches_resend_for_a_range_in_the_sites_zone(site: Site) -> None:
    async with _client() as client:
        assert await _sign_in(client, site.url, "admin") == 303
        token = await _csrf(client, f"{site.url}/terminals/{TERMINAL}")
        start = (dt.datetime.now(ZoneInfo(TIMEZONE)) - dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
        form = {"csrf": token, "command": "punches.resend", "request_id": "resend-1", "from": start}
        status, _body, location = await _post(client, site, form)
        assert (status, location) == (303, "/commands/resend-1")
        wait_until(lambda: "command_done" in _kinds(site, "resend-1"), timeout=30, message="resend answered")
        async with client.get(f"{site.url}{location}") as response:
            outcome = await response.text()
        assert "status-ok" in outcome and "requeued" in outcome
        accepted = next(e for e in _audit(site, "resend-1") if e.kind == "command_accepted")
        assert accepted.account == "console:admin"


def test_the_forms_arguments() -> None:
    page = Page(Words("en"), None, "", "/", TIMEZONE)
    resend = _args("punches.resend", {"from": "2026-11-30T08:00", "to": ""}, page)
    assert resend == {"from": "2026-11-30T08:00:00+08:00"}  # the site's wall time, as an instant
    assert _args("punches.resend", {"to": "2026-11-30T08:00"}, page) == page.words("cmd.from_required")
    assert "is not a date and time" in str(_args("punches.resend", {"from": "yesterday"}, page))
    assert _args("device.set_time", {"time": ""}, page) == {}  # the gateway's clock
    assert _args("device.set_time", {"time": "2026-11-30T08:00:05"}, page) == {"time": "2026-11-30T08:00:05"}
    assert _args("log.clear", {"serial": " HEALTH-1 "}, page) == {"serial": "HEALTH-1"}
    assert _args("device.info", {"serial": "ignored"}, page) == {}


def test_an_admin_clicks_device_info_and_sees_the_terminal_answer(site: Site, tmp_path: Path) -> None:
    page: Any = site.new_page()
    site.sign_in(page, "admin")
    page.goto(f"{site.url}/terminals/{TERMINAL}")
    page.get_by_role("button", name="device.info").click()
    page.wait_for_url(re.compile(r".*/commands/console-[0-9a-f]+$"))
    outcome = page.locator(".outcome")
    # The page refreshes its outcome in place until the terminal answered.
    outcome.locator(".badge", has_text="ok").wait_for(timeout=30_000)
    assert site.terminals[TERMINAL].serial_number in outcome.inner_text()
    names, values = outcome.locator("dt").all_inner_texts(), outcome.locator("dd").all_inner_texts()
    facts = dict(zip(names, values, strict=True))
    assert facts["record_count"].isdigit()
    screenshot(page, tmp_path / "screenshots", "command-device-info")
    page.context.close()
