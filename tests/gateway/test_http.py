"""The aiohttp server's limits and errors, over a real loopback socket: 413, 404, 405, 500 and replay.

tests/health/test_http_and_cli.py covers the routes' answers and the status CLI; this file covers
what the middlewares add and how POST /api/replay reads its JSON body. test_http_security.py
covers Host, Origin and the token; test_http_flood.py floods a running daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from punchgate.gateway import http_guards
from punchgate.gateway.http import MAX_BODY, HttpServer, start_http_server
from tests.health.test_http_and_cli import FakeApp, FakeStore

TOKEN = "t0ken-for-the-tests-0123456789abcdefghij"


class ReplayStore(FakeStore):
    def __init__(self) -> None:
        self.calls: list[tuple[float, str | None]] = []

    def requeue_delivered(self, *, since: float, device: str | None) -> int:
        self.calls.append((since, device))
        return 7


class ReplayForwarder:
    connected = True
    rewound = 0

    def rewind(self) -> None:
        self.rewound += 1


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes; (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def raw_request(
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str | None] | None = None,
    body: bytes | None = None,
) -> bytes:
    """An HTTP/1.1 request with a Host of ours (127.0.0.1:port) unless `headers` say otherwise
    (a None value leaves that header out)."""
    fields: dict[str, str | None] = {"Host": f"127.0.0.1:{port}"}
    if body is not None:
        fields["Content-Length"] = str(len(body))
    fields.update(headers or {})
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + (body or b"")


def replay_request(
    port: int, payload: Any, *, token: str | None = TOKEN, headers: Mapping[str, str | None] | None = None
) -> bytes:
    """POST /api/replay with a JSON body (a dict is encoded; bytes are sent as they are)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    fields: dict[str, str | None] = {"Content-Type": "application/json"}
    if token is not None:
        fields["Authorization"] = f"Bearer {token}"
    fields.update(headers or {})
    return raw_request(port, "POST", "/api/replay", headers=fields, body=body)


def recent(seconds: float = 3600) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def server() -> AsyncIterator[tuple[Any, HttpServer]]:
    app = FakeApp()
    app.store, app.forwarder = ReplayStore(), ReplayForwarder()
    http = HttpServer(app, token=TOKEN)  # type: ignore[arg-type]
    await http.start("127.0.0.1", 0)
    try:
        yield app, http
    finally:
        await http.close()


async def test_oversized_body_gets_413(server: tuple[Any, HttpServer]) -> None:
    _app, http = server
    status, headers, answer = await exchange(http.port, replay_request(http.port, b"x" * (MAX_BODY + 1)))
    assert status == 413 and answer == b"request entity too large\n"
    assert headers["connection"] == "close"


async def test_oversized_chunked_body_gets_413(server: tuple[Any, HttpServer]) -> None:
    """No Content-Length to refuse up front: the body is counted as it arrives."""
    _app, http = server
    chunk = b"y" * 4096
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 1))
    request = raw_request(
        http.port,
        "POST",
        "/api/replay",
        headers={
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {TOKEN}",
        },
    )
    status, _headers, _body = await exchange(http.port, request + chunks + b"0\r\n\r\n")
    assert status == 413


async def test_a_body_that_never_arrives_gets_408(
    server: tuple[Any, HttpServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _app, http = server
    monkeypatch.setattr(http_guards, "BODY_TIMEOUT", 0.5)
    request = replay_request(http.port, b'{"since": ', headers={"Content-Length": "100"})
    status, _headers, body = await exchange(http.port, request)  # the rest never comes
    assert status == 408 and b"did not arrive within" in body


async def test_unknown_path_is_404(server: tuple[Any, HttpServer]) -> None:
    _app, http = server
    status, headers, body = await exchange(http.port, raw_request(http.port, "GET", "/nope"))
    assert (status, headers["content-type"], body) == (404, "text/plain", b"not found\n")
    status, _headers, _body = await exchange(http.port, raw_request(http.port, "GET", "/healthz/"))
    assert status == 404  # no slash appended or stripped


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("POST", "/healthz", "GET,HEAD"), ("PUT", "/metrics", "GET,HEAD"), ("GET", "/api/replay", "POST")],
)
async def test_wrong_method_is_405(
    server: tuple[Any, HttpServer], method: str, path: str, allow: str
) -> None:
    """Even without a token: there is nothing to protect on a route that does not exist."""
    _app, http = server
    status, headers, body = await exchange(http.port, raw_request(http.port, method, path, body=b""))
    assert (status, body) == (405, b"method not allowed\n")
    assert sorted(headers["allow"].split(",")) == sorted(allow.split(","))


async def test_handler_failure_is_500_and_logged(server: tuple[Any, HttpServer]) -> None:
    app, http = server
    devices, app.devices = app.devices, None  # gateway_status() fails on this
    with capture_logs() as logs:
        status, _headers, body = await exchange(http.port, raw_request(http.port, "GET", "/api/devices"))
    assert (status, body) == (500, b"internal error\n")
    assert [e["path"] for e in logs if e["event"] == "http_handler_failed"] == ["/api/devices"]
    app.devices = devices
    status, _headers, _body = await exchange(http.port, raw_request(http.port, "GET", "/api/devices"))
    assert status == 200


async def test_replay_reads_its_json_body(server: tuple[Any, HttpServer]) -> None:
    app, http = server
    since = dt.datetime.now(dt.UTC).replace(microsecond=500000) - dt.timedelta(days=1)
    status, headers, body = await exchange(
        http.port, replay_request(http.port, {"since": since.isoformat(), "device": "gate-1"})
    )
    assert (status, headers["content-type"], body) == (200, "application/json", b'{"requeued": 7}')
    unix = since.timestamp() + 60
    status, _headers, _body = await exchange(
        http.port, replay_request(http.port, {"since": unix, "device": ""})
    )
    assert status == 200  # a unix time works too; an empty device means every terminal
    naive = since.replace(tzinfo=None).isoformat()  # no offset: UTC
    status, _headers, _body = await exchange(http.port, replay_request(http.port, {"since": naive}))
    assert status == 200
    assert app.store.calls == [
        (since.timestamp(), "gate-1"),
        (unix, None),
        (since.timestamp(), None),
    ]
    assert app.forwarder.rewound == 3


@pytest.mark.parametrize(
    ("payload", "status", "sentence"),
    [
        ({}, 400, b"since is required"),
        ({"since": recent(), "devices": "x"}, 400, b"unknown key 'devices'"),
        ({"since": recent(), "device": 5}, 400, b"device must be a terminal name"),
        ({"since": recent(), "device": "nope"}, 404, b"no terminal named 'nope'"),
        ({"since": "yesterday"}, 400, b"not an ISO 8601 time"),
        ({"since": True}, 400, b"since must be an ISO 8601 time"),
        (b"[1, 2]", 400, b"must be a JSON object"),
        (b"since=5", 400, b"not valid JSON"),
    ],
)
async def test_replay_refuses_bad_bodies(
    server: tuple[Any, HttpServer], payload: Any, status: int, sentence: bytes
) -> None:
    app, http = server
    answer, headers, body = await exchange(http.port, replay_request(http.port, payload))
    assert (answer, headers["content-type"]) == (status, "text/plain; charset=utf-8")
    assert sentence in body and body.endswith(b"\n")
    assert app.store.calls == []


async def test_port_zero_from_settings_is_discoverable_and_close_releases_it(tmp_path: Any) -> None:
    app = FakeApp()
    http_settings = app.settings.http.model_copy(update={"port": 0, "token_file": tmp_path / "api" / "token"})
    # The buffer here too: the console makes its folder beside it (a default path would put
    # it in /var/lib/punchgate, outside the test, when the suite runs as root).
    buffer = app.settings.buffer.model_copy(update={"path": tmp_path / "buffer.db"})
    app.settings = app.settings.model_copy(update={"http": http_settings, "buffer": buffer})
    http = await start_http_server(app)  # type: ignore[arg-type]
    port = http.port
    try:
        assert port != 0
        assert (tmp_path / "console" / "session.key").is_file()
        status, headers, body = await exchange(port, raw_request(port, "GET", "/healthz"))
        assert (status, headers["content-type"], body) == (200, "text/plain; charset=utf-8", b"ok\n")
    finally:
        await http.close()
    await http.close()  # a second close is harmless
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_malformed_requests_are_one_counted_warning_not_tracebacks(
    server: tuple[Any, HttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    """What a scanner sends: aiohttp answers 400 and would log an ERROR with a traceback each."""
    _app, http = server
    garbage = [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
    ]
    with capture_logs() as logs:
        for _ in range(20):
            for raw in garbage:
                status, _headers, _body = await exchange(http.port, raw)
                assert status == 400
    bad = [e for e in logs if e["event"] == "http_bad_request"]
    assert 1 <= len(bad) <= len(garbage)  # one per kind of error, then counted
    assert all("exc_info" not in e and e["log_level"] == "warning" for e in bad)
    assert not [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= 30]
    assert sum(n for key, n in http.limited.total.items() if key.startswith("http_bad_request")) == 60
