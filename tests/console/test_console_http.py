"""The console's sign-in, sessions and CSRF checks over a real loopback socket (no browser).

A stand-in application (tests/health) behind the real HttpServer, with a real console: its
key and accounts file in a temporary folder. The browser tests (test_browser.py) drive the same
pages through Chromium against a real daemon.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from punchgate.gateway.console.accounts import Accounts
from punchgate.gateway.console.web import Console
from punchgate.gateway.http import HttpServer
from tests.gateway.test_http import TOKEN, ReplayForwarder, ReplayStore, recent
from tests.health.test_http_and_cli import FakeApp

PASSWORD = "a long test password"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, HttpServer]]:
    buffer = tmp_path / "state" / "buffer.db"
    accounts = Accounts.beside_buffer(buffer)
    for role in ("viewer", "admin"):
        accounts.add(role, role, PASSWORD)
    app = FakeApp()
    app.store, app.forwarder = ReplayStore(), ReplayForwarder()
    server = HttpServer(app, token=TOKEN, console=Console.open(buffer))  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}", server
    finally:
        await server.close()


def _client() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies for an IP address host (127.0.0.1), as browsers do.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _csrf(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(url) as response:
        found = CSRF.search(await response.text())
    assert found, url
    return found.group(1)


async def _sign_in(client: aiohttp.ClientSession, base: str, name: str, password: str = PASSWORD) -> int:
    token = await _csrf(client, base + "/login")
    form = {"csrf": token, "name": name, "password": password, "next": "/"}
    async with client.post(base + "/login", data=form, allow_redirects=False) as response:
        return response.status


async def test_signing_in_needs_the_forms_token_and_sets_a_strict_cookie(served: tuple[str, Any]) -> None:
    base, _server = served
    async with _client() as client:
        async with client.get(base + "/", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/login?next=%2F"
        await _csrf(client, base + "/login")
        form = {"name": "admin", "password": PASSWORD}
        async with client.post(base + "/login", data=form, allow_redirects=False) as response:
            assert response.status == 403  # no CSRF token in the form
        token = await _csrf(client, base + "/login")
        async with client.post(
            base + "/login", data={**form, "csrf": token, "next": "//evil.example/"}, allow_redirects=False
        ) as response:
            assert response.status == 303 and response.headers["Location"] == "/"  # never off-site
            cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "pg_session=" in cookie
        async with client.get(base + "/account") as response:
            assert response.status == 200 and "admin" in await response.text()
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_wrong_passwords_are_limited(served: tuple[str, Any]) -> None:
    base, _server = served
    async with _client() as client:
        statuses = [await _sign_in(client, base, "viewer", "not the password") for _ in range(6)]
        assert statuses == [401] * 5 + [429]
        assert await _sign_in(client, base, "viewer") == 429  # even the right one, for a while


async def test_a_form_without_its_csrf_token_changes_nothing(served: tuple[str, Any]) -> None:
    base, _server = served
    async with _client() as client:
        assert await _sign_in(client, base, "admin") == 303
        form = {"name": "mallory", "role": "admin", "password": PASSWORD}
        async with client.post(base + "/accounts", data=form) as response:
            assert response.status == 403
        async with client.post(
            base + "/accounts", data={**form, "csrf": "x" * 32}, headers={"Origin": base}
        ) as response:
            assert response.status == 403  # another token
        async with client.post(
            base + "/accounts", data=form, headers={"Origin": "http://evil.example"}
        ) as response:
            assert response.status == 403  # a cross-site form: refused before any page sees it
        async with client.get(base + "/accounts") as response:
            assert "mallory" not in await response.text()
        token = await _csrf(client, base + "/accounts")
        async with client.post(base + "/accounts", data={**form, "csrf": token}) as response:
            assert response.status == 200 and "mallory" in await response.text()


async def test_a_viewer_sees_no_admin_page(served: tuple[str, Any]) -> None:
    base, _server = served
    async with _client() as client:
        assert await _sign_in(client, base, "viewer") == 303
        async with client.get(base + "/accounts") as response:
            assert response.status == 403
        async with client.get(base + "/account") as response:
            page = await response.text()
        assert 'href="/accounts"' not in page and 'href="/punches"' in page


async def test_api_posts_take_the_token_or_an_admins_session_with_its_csrf_header(
    served: tuple[str, Any],
) -> None:
    base, _server = served
    body = {"since": recent()}
    async with _client() as client:
        async with client.post(base + "/api/replay", json=body) as response:
            assert response.status == 401
        async with client.post(
            base + "/api/replay", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 200
    for role, expected in (("viewer", 401), ("admin", 200)):
        async with _client() as client:
            assert await _sign_in(client, base, role) == 303
            async with client.post(base + "/api/replay", json=body) as response:
                assert response.status == 401  # a session alone is not enough: its CSRF token too
            token = await _csrf(client, base + "/account")
            async with client.post(
                base + "/api/replay", json=body, headers={"X-CSRF-Token": token}
            ) as response:
                assert response.status == expected, role
