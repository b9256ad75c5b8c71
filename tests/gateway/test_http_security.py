"""Web pages against the loopback API, over real sockets: the token, Host and Origin, JSON only,
and `since` that cannot be a real replay time. Plus the token file itself and the rate-limited log.

A web page can make the browser send requests to 127.0.0.1 (CSRF), and can re-point its own
name at 127.0.0.1 to read answers (DNS rebinding). Each test is one such request, answered the
way docs/health.md promises.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from punchgate.gateway.http import HttpServer, parse_since
from punchgate.gateway.http_security import HostPolicy
from punchgate.gateway.ratelimit_log import RateLimitedLog
from punchgate.gateway.settings import HttpSettings
from punchgate.gateway.token import TokenError, ensure_token, read_token, token_path
from punchgate.sync.settings import BufferSettings
from tests.gateway.test_http import (
    TOKEN,
    ReplayForwarder,
    ReplayStore,
    exchange,
    raw_request,
    recent,
    replay_request,
)
from tests.health.test_http_and_cli import FakeApp


@pytest.fixture
async def server() -> AsyncIterator[tuple[Any, HttpServer]]:
    app = FakeApp()
    app.settings = app.settings.model_copy(
        update={"http": app.settings.http.model_copy(update={"allowed_hosts": ["gw.example.net"]})}
    )
    app.store, app.forwarder = ReplayStore(), ReplayForwarder()
    http = HttpServer(app, token=TOKEN)  # type: ignore[arg-type]
    await http.start("127.0.0.1", 0)
    try:
        yield app, http
    finally:
        await http.close()


# --- the token (CSRF) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, b"no API token sent"), ("wrong-" + TOKEN[6:], b"wrong API token"), ("", b"no API token sent")],
)
async def test_replay_without_the_right_token_is_401(
    server: tuple[Any, HttpServer], token: str | None, reason: bytes
) -> None:
    app, http = server
    status, headers, body = await exchange(
        http.port, replay_request(http.port, {"since": recent()}, token=token)
    )
    assert status == 401 and body.startswith(reason)
    assert headers["www-authenticate"] == 'Bearer realm="punchgate"'
    assert app.store.calls == [] and app.forwarder.rewound == 0


async def test_replay_with_the_right_token_is_200(server: tuple[Any, HttpServer]) -> None:
    app, http = server
    status, _headers, body = await exchange(http.port, replay_request(http.port, {"since": recent()}))
    assert (status, body) == (200, b'{"requeued": 7}')
    assert len(app.store.calls) == 1


async def test_the_token_is_checked_before_the_body_is_read(server: tuple[Any, HttpServer]) -> None:
    """A wrong token with a body that is not even JSON: 401, not 400 or 415."""
    _app, http = server
    request = raw_request(
        http.port, "POST", "/api/replay", headers={"Content-Type": "text/plain"}, body=b"since=0"
    )
    status, _headers, _body = await exchange(http.port, request)
    assert status == 401


async def test_without_a_token_the_daemon_refuses_changes_but_serves_reads() -> None:
    app = FakeApp()
    http = HttpServer(app, token=None, token_problem="cannot create /x/api: read-only file system")  # type: ignore[arg-type]
    await http.start("127.0.0.1", 0)
    try:
        status, _headers, body = await exchange(http.port, replay_request(http.port, {"since": recent()}))
        assert status == 503 and b"read-only file system" in body
        status, _headers, _body = await exchange(http.port, raw_request(http.port, "GET", "/healthz"))
        assert status == 200
    finally:
        await http.close()


# --- JSON only ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_post_that_is_not_json_is_415(
    server: tuple[Any, HttpServer], content_type: str | None
) -> None:
    """What an HTML form or a no-preflight fetch() can send: never accepted."""
    app, http = server
    request = replay_request(http.port, {"since": recent()}, headers={"Content-Type": content_type})
    status, _headers, body = await exchange(http.port, request)
    assert status == 415 and b"send Content-Type: application/json" in body
    assert app.store.calls == []


async def test_the_old_query_string_form_is_refused(server: tuple[Any, HttpServer]) -> None:
    app, http = server
    request = raw_request(
        http.port, "POST", "/api/replay?since=1700000000", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    status, _headers, _body = await exchange(http.port, request)
    assert status == 415 and app.store.calls == []


# --- since ------------------------------------------------------------------------------------


def _days_ago(days: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("raw_since", "sentence"),
    [
        (b'"nan"', b"since must be a finite time, not nan"),
        (b"NaN", b"since must be a finite time, not nan"),
        (b'"inf"', b"since must be a finite time, not inf"),
        (b"Infinity", b"since must be a finite time, not inf"),
        (b'"-inf"', b"since must be a finite time, not -inf"),
        (b"-Infinity", b"since must be a finite time, not -inf"),
        (b'"1990-01-01T00:00:00Z"', b"since 1990-01-01T00:00:00Z is before 2000"),
        (b"1990", b"since 1970-01-01T00:33:10Z is before 2000"),
        (b'"2999-01-01T00:00:00Z"', b"since 2999-01-01T00:00:00Z is in the future"),
        (b"1e300", b"is in the future"),
        pytest.param(  # a fixed id: the time in it changes with every collection
            f'"{_days_ago(91)}"'.encode(),
            b"older than the buffer keeps delivered punches ([buffer] retention_days = 90)",
            id="91-days-ago",
        ),
    ],
)
async def test_since_that_cannot_be_a_replay_time_is_400(
    server: tuple[Any, HttpServer], raw_since: bytes, sentence: bytes
) -> None:
    app, http = server
    status, _headers, body = await exchange(
        http.port, replay_request(http.port, b'{"since": ' + raw_since + b"}")
    )
    assert status == 400, body
    assert sentence in body
    assert app.store.calls == []


def test_parse_since_bounds() -> None:
    now = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC).timestamp()
    assert parse_since("2026-11-20T06:00:00Z", now=now, retention_days=90) == now - 6 * 3600
    assert parse_since("2026-11-20T07:00:00+01:00", now=now, retention_days=90) == now - 6 * 3600
    assert parse_since(now + 30, now=now, retention_days=90) == now + 30  # a caller's clock a bit ahead
    assert parse_since(str(now - 86400), now=now, retention_days=1) == now - 86400  # just inside
    with pytest.raises(ValueError, match="retention_days = 1"):
        parse_since(now - 86401, now=now, retention_days=1)
    with pytest.raises(ValueError, match="in the future"):
        parse_since(now + 61, now=now, retention_days=90)


# --- Host (DNS rebinding) and Origin (cross-site requests) -----------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",  # a rebinding page's own name
        "evil.example",
        "localhost.evil.example:{port}",
        "127.0.0.1:1",  # loopback, but not our port
        "localhost:{port}@evil.example",
        "127.0.0.1:{port}:80",
        "[::1:{port}",
        "",
    ],
)
async def test_a_foreign_host_is_403_even_for_reads(server: tuple[Any, HttpServer], host: str) -> None:
    _app, http = server
    request = raw_request(http.port, "GET", "/api/devices", headers={"Host": host.format(port=http.port)})
    status, _headers, body = await exchange(http.port, request)
    assert status == 403 and b"devices" not in body


async def test_http_1_0_without_host_is_403(server: tuple[Any, HttpServer]) -> None:
    _app, http = server
    status, _headers, body = await exchange(http.port, b"GET /api/devices HTTP/1.0\r\n\r\n")
    assert status == 403 and b"a Host header is required" in body


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "127.3.2.1:{port}",
        "localhost:{port}",
        "LocalHost:{port}",
        "[::1]:{port}",
        "[::ffff:127.0.0.1]:{port}",
        "gw.example.net:{port}",  # [http] allowed_hosts
    ],
)
async def test_our_own_hosts_are_answered(server: tuple[Any, HttpServer], host: str) -> None:
    _app, http = server
    request = raw_request(http.port, "GET", "/api/devices", headers={"Host": host.format(port=http.port)})
    status, _headers, body = await exchange(http.port, request)
    assert status == 200 and b'"gate-1"' in body


async def test_two_host_headers_are_403(server: tuple[Any, HttpServer]) -> None:
    _app, http = server
    raw = f"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1:{http.port}\r\nHost: evil.example\r\n\r\n".encode()
    status, _headers, _body = await exchange(http.port, raw)
    assert status in (400, 403)  # aiohttp may refuse the duplicate itself


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://evil.example:{port}",
        "http://evil.example:{port}",
        "null",  # a sandboxed frame or a file:// page
        "http://127.0.0.1:1",
        "ftp://127.0.0.1:{port}",
        "http://127.0.0.1:{port}/path",
        "http://user@127.0.0.1:{port}",
    ],
)
async def test_a_foreign_origin_on_post_is_403_even_with_the_token(
    server: tuple[Any, HttpServer], origin: str
) -> None:
    app, http = server
    request = replay_request(
        http.port, {"since": recent()}, headers={"Origin": origin.format(port=http.port)}
    )
    status, _headers, body = await exchange(http.port, request)
    assert status == 403 and b"may not use this API" in body
    assert app.store.calls == []


async def test_a_foreign_origin_on_get_is_403(server: tuple[Any, HttpServer]) -> None:
    _app, http = server
    request = raw_request(http.port, "GET", "/api/devices", headers={"Origin": "http://evil.example"})
    status, _headers, _body = await exchange(http.port, request)
    assert status == 403


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://[::1]:{port}"]
)
async def test_our_own_origin_may_post(server: tuple[Any, HttpServer], origin: str) -> None:
    _app, http = server
    request = replay_request(
        http.port, {"since": recent()}, headers={"Origin": origin.format(port=http.port)}
    )
    status, _headers, _body = await exchange(http.port, request)
    assert status == 200


def test_host_policy_bind_address_and_ports() -> None:
    policy = HostPolicy.build(
        port=9108, bind="192.0.2.10", allowed_hosts=["gw.example.net", "proxy.example:443"]
    )
    assert policy.host_problem("192.0.2.10:9108") is None  # the configured bind address
    assert policy.host_problem("192.0.2.10:80") is not None
    assert policy.host_problem("gw.example.net:9108") is None
    assert policy.host_problem("proxy.example:443") is None  # an entry with its own port
    assert policy.origin_problem("https://proxy.example") is None  # https: 443 by default
    assert policy.host_problem("proxy.example:9108") is not None
    wildcard = HostPolicy.build(port=9108, bind="0.0.0.0", allowed_hosts=[])
    assert wildcard.host_problem("0.0.0.0:9108") is not None  # a wildcard is no name of ours


# --- the token file ---------------------------------------------------------------------------------


def _settings(tmp_path: Path, **http: Any) -> tuple[HttpSettings, BufferSettings]:
    return HttpSettings(**http), BufferSettings(path=tmp_path / "state" / "buffer.db")  # type: ignore[call-arg]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_file_is_0600_in_a_0700_folder_under_umask_022(tmp_path: Path) -> None:
    http, buffer = _settings(tmp_path)
    (tmp_path / "state").mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        token, path = ensure_token(http, buffer)
    finally:
        os.umask(old)
    assert path == tmp_path / "state" / "api" / "token" == token_path(http, buffer)
    assert (_mode(path), _mode(path.parent)) == (0o600, 0o700)
    assert _mode(tmp_path / "state") == 0o755  # the buffer's own folder is left alone
    assert len(token) >= 40 and read_token(path) == token
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temporary file left behind
    again, _ = ensure_token(http, buffer)
    assert again == token  # kept across restarts


def test_a_loose_token_file_or_folder_is_tightened_and_the_secret_replaced(tmp_path: Path) -> None:
    http, buffer = _settings(tmp_path)
    token, path = ensure_token(http, buffer)
    path.chmod(0o644)
    path.parent.chmod(0o755)
    new, _ = ensure_token(http, buffer)
    assert new != token and (_mode(path), _mode(path.parent)) == (0o600, 0o700)
    path.write_text("short\n")
    assert ensure_token(http, buffer)[0] not in (new, "short")


def test_a_configured_token_file_and_its_folder(tmp_path: Path) -> None:
    http, buffer = _settings(tmp_path, token_file=tmp_path / "etc" / "punchgate" / "api-token")
    _token, path = ensure_token(http, buffer)
    assert path == tmp_path / "etc" / "punchgate" / "api-token"
    assert (_mode(path), _mode(path.parent)) == (0o600, 0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    http, buffer = _settings(tmp_path, token_file=shared / "token")
    with pytest.raises(TokenError, match="writable by others"):
        ensure_token(http, buffer)


def test_a_symlinked_token_file_is_refused(tmp_path: Path) -> None:
    http, buffer = _settings(tmp_path)
    _token, path = ensure_token(http, buffer)
    path.unlink()
    (tmp_path / "elsewhere").write_text("x" * 43)
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TokenError, match="cannot open"):
        ensure_token(http, buffer)


def test_read_token_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="the daemon creates it when it first starts"):
        read_token(tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read the file as another user")
def test_another_user_cannot_read_the_token(tmp_path: Path) -> None:
    http, buffer = _settings(tmp_path)
    _token, path = ensure_token(http, buffer)
    tmp_path.chmod(0o755)
    (tmp_path / "state").chmod(0o755)
    result = subprocess.run(["cat", str(path)], user="nobody", capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "Permission denied" in result.stderr


# --- the rate-limited log -----------------------------------------------------------------------------


class _Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))


def test_rate_limited_log_counts_what_it_leaves_out() -> None:
    now = [0.0]
    lines = _Lines()
    limited = RateLimitedLog(lines, interval=60, clock=lambda: now[0])
    for _ in range(1000):
        limited.warning("http_bad_request", key="BadStatusLine", remote="127.0.0.1")
    limited.error("http_handler_failed", path="/metrics")  # another key: logged at once
    assert [(level, event) for level, event, _ in lines.lines] == [
        ("warning", "http_bad_request"),
        ("error", "http_handler_failed"),
    ]
    now[0] = 61.0
    limited.warning("http_bad_request", key="BadStatusLine", remote="127.0.0.1")
    assert lines.lines[-1] == ("warning", "http_bad_request", {"remote": "127.0.0.1", "suppressed": 999})
    limited.warning("http_bad_request", key="BadStatusLine", remote="127.0.0.2")
    limited.flush()
    assert lines.lines[-1] == (
        "warning",
        "http_bad_request",
        {"remote": "127.0.0.2", "suppressed": 1, "summary": True},
    )
    assert limited.total == {"BadStatusLine": 1002, "http_handler_failed": 1}
    assert len(lines.lines) == 4
