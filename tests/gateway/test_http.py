"""The aiohttp server's limits and errors, over a real loopback socket: 413, 404, 405, 500 and replay.

tests/health/test_http_and_cli.py covers the routes' answers and the status CLI; this file covers
what the middlewares add and how POST /api/replay reads its query.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from punchgate.gateway.http import MAX_BODY, HttpServer, start_http_server
from tests.health.test_http_and_cli import FakeApp


class ReplayStore:
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


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
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


@pytest.fixture
async def server() -> AsyncIterator[tuple[Any, HttpServer]]:
    app = FakeApp()
    http = HttpServer(app)  # type: ignore[arg-type]
    await http.start("127.0.0.1", 0)
    try:
        yield app, http
    finally:
        await http.close()


async def test_oversized_body_gets_413(server: tuple[Any, HttpServer]) -> None:
    _app, http = server
    body = b"x" * (MAX_BODY + 1)
    status, headers, answer = await _exchange(
        http.port,
        b"POST /api/replay?since=0 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
    )
    assert status == 413 and answer == b"request entity too large\n"
    assert headers["connection"] == "close"


async def test_oversized_chunked_body_gets_413(server: tuple[Any, HttpServer]) -> None:
    """No Content-Length to refuse up front: the body is counted as it arrives."""
    _app, http = server
    chunk = b"y" * 4096
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 1))
    status, _headers, _body = await _exchange(
        http.port,
        b"POST /api/replay?since=0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\n\r\n",
    )
    assert status == 413


async def test_unknown_path_is_404(server: tuple[Any, HttpServer]) -> None:
    _app, http = server
    status, headers, body = await _exchange(http.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["content-type"], body) == (404, "text/plain", b"not found\n")
    status, _headers, _body = await _exchange(http.port, b"GET /healthz/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404  # no slash appended or stripped


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("POST", "/healthz", "GET,HEAD"), ("PUT", "/metrics", "GET,HEAD"), ("GET", "/api/replay", "POST")],
)
async def test_wrong_method_is_405(
    server: tuple[Any, HttpServer], method: str, path: str, allow: str
) -> None:
    _app, http = server
    status, headers, body = await _exchange(
        http.port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert (status, body) == (405, b"method not allowed\n")
    assert sorted(headers["allow"].split(",")) == sorted(allow.split(","))


async def test_handler_failure_is_500_and_logged(server: tuple[Any, HttpServer]) -> None:
    app, http = server
    devices, app.devices = app.devices, None  # gateway_status() fails on this
    with capture_logs() as logs:
        status, _headers, body = await _exchange(http.port, b"GET /api/devices HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (500, b"internal error\n")
    assert [e["path"] for e in logs if e["event"] == "http_handler_failed"] == ["/api/devices"]
    app.devices = devices
    status, _headers, _body = await _exchange(http.port, b"GET /api/devices HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200


async def test_replay_reads_its_query_and_ignores_a_small_body(server: tuple[Any, HttpServer]) -> None:
    app, http = server
    app.store, app.forwarder = ReplayStore(), ReplayForwarder()
    request = b"POST /api/replay?since=1700000000.5&device=gate-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    status, headers, body = await _exchange(http.port, request)
    assert (status, headers["content-type"], body) == (200, "application/json", b'{"requeued": 7}')
    status, _headers, _body = await _exchange(
        http.port, b"POST /api/replay?since=5&device= HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status == 200  # an empty device= means every terminal
    assert app.store.calls == [(1700000000.5, "gate-1"), (5.0, None)] and app.forwarder.rewound == 2
    status, _headers, body = await _exchange(http.port, b"POST /api/replay HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (400, b"since=UNIX_TIME is required\n")
    status, _headers, body = await _exchange(
        http.port, b"POST /api/replay?since=0&device=nope HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert (status, body) == (404, b"no terminal named 'nope'\n")


async def test_port_zero_from_settings_is_discoverable_and_close_releases_it() -> None:
    app = FakeApp()
    app.settings = app.settings.model_copy(update={"http": app.settings.http.model_copy(update={"port": 0})})
    http = await start_http_server(app)  # type: ignore[arg-type]
    port = http.port
    try:
        assert port != 0
        status, headers, body = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, headers["content-type"], body) == (200, "text/plain; charset=utf-8", b"ok\n")
    finally:
        await http.close()
    await http.close()  # a second close is harmless
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
