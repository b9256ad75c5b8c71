"""`punchgate status` to a pipe writes the text the daemon laid out (GET /api/status.txt), over real sockets.

The CLI's output and exit code equal what `status_cli.show_status` prints and returns against
the same daemon (tests/gateway/test_status_fast.py holds the texts equal through every kind of
change); it imports nothing `--version` does not, beyond its own small module; it steps aside
(the old path runs) for colour, the wide table, another time zone, a daemon without the route,
and a daemon that does not answer. `plain_width` follows rich's own Console.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from rich.console import Console

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway import status_fast
from punchgate.gateway.http import HttpServer
from punchgate.gateway.status_cli import show_status
from punchgate.gateway.status_fast import WIDE, plain_width, show_plain
from punchgate.gateway.status_text import zone_problem
from tests.health.test_http_and_cli import FakeApp, _request
from tests.support.broker import free_port

# What `punchgate status` to a pipe needs beyond --version no longer: the renderer and its data.
NOT_IMPORTED = (
    "urllib.request",
    "encodings.idna",
    "punchgate.gateway.faults",
    "punchgate.gateway.console.health_view",
    "punchgate.gateway.status_cli",
    "rich._emoji_codes",
)


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeApp, str]]:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "60")
    app = FakeApp()
    app.devices["gate-1"].contact_failed("timeout", "gate-1: no answer in 5 s " + "x" * 70)
    server = HttpServer(app)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield app, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def both(
    url: str, capsys: pytest.CaptureFixture[str]
) -> tuple[tuple[int | None, str], tuple[int, str]]:
    """(exit code, output) of the fast path, then of the old one, against the same daemon."""
    for _attempt in range(3):  # a "since … (age)" may tick between the two
        fast = await asyncio.to_thread(show_plain, url), capsys.readouterr().out
        old = await asyncio.to_thread(show_status, url), capsys.readouterr().out
        if fast == old:
            break
    return fast, old


async def test_the_cli_writes_the_daemons_text(
    served: tuple[FakeApp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = served
    fast, old = await both(url, capsys)
    assert fast == old and fast[0] == 1
    assert "gate-1" in fast[1] and "timeout" in fast[1] and "→ " in fast[1]
    info = DeviceInfo(serial_number="S1", record_count=10, record_capacity=100, clock=None)
    app.devices["gate-1"].contact_ok(info, drift_seconds=None)  # reachable again: healthy
    fast, old = await both(url, capsys)
    assert fast == old and fast[0] == 0
    assert await asyncio.to_thread(show_plain, url + "/") == 0  # a trailing slash, as before
    capsys.readouterr()


async def test_the_cli_steps_aside_where_the_text_could_differ(
    served: tuple[FakeApp, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _app, url = served
    port = url.rsplit(":", 1)[1]
    monkeypatch.setenv("COLUMNS", str(WIDE))  # the table: rich lays it out
    assert await asyncio.to_thread(show_plain, url) is None
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("FORCE_COLOR", "1")  # colour
    assert await asyncio.to_thread(show_plain, url) is None
    monkeypatch.delenv("FORCE_COLOR")
    assert await asyncio.to_thread(show_plain, f"http://127.0.0.1:{free_port()}") is None  # no daemon
    assert await asyncio.to_thread(show_plain, f"https://127.0.0.1:{port}") is None
    assert capsys.readouterr().out == ""
    # Another zone than the daemon's, or a width it does not serve: refused, so the CLI renders.
    other = await _request(int(port), b"GET /api/status.txt?width=80&zone=XYZ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert other.startswith(b"HTTP/1.1 409")
    for width in (b"19", b"120", b"", b"8x"):
        zone = quote(status_fast.zone_label()).encode()
        query = b"GET /api/status.txt?width=" + width + b"&zone=" + zone + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        answer = await _request(int(port), query)
        assert answer.startswith(b"HTTP/1.1 400"), width
    assert zone_problem(os.environ.get("TZ"), status_fast.zone_label()) is None
    assert zone_problem("Asia/Shanghai" if os.environ.get("TZ") != "Asia/Shanghai" else "UTC", "") is not None
    # A foreign Host is refused as on every route; the CLI then lets show_status explain it.
    foreign = await _request(
        int(port), b"GET /api/status.txt?width=80 HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    )
    assert foreign.startswith(b"HTTP/1.1 403")


async def test_the_command_imports_nothing_of_the_renderer(served: tuple[FakeApp, str]) -> None:
    """The real command in its own process, to a pipe: the daemon's text, none of the renderer's
    imports (the cost issue 18 measured), and the same exit code as the old path."""
    _app, url = served
    env = {**os.environ, "COLUMNS": "60"}
    command = [sys.executable, "-X", "importtime", "-m", "punchgate.gateway", "status", "--url", url]
    ran = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env, timeout=60
    )
    assert ran.returncode == 1, ran.stderr[-2000:]
    assert "gate-1" in ran.stdout and "timeout" in ran.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in ran.stderr.splitlines() if "|" in line}
    assert "punchgate.gateway.status_fast" in imported
    assert not imported & set(NOT_IMPORTED)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"COLUMNS": "57"},
        {"COLUMNS": "0"},
        {"FORCE_COLOR": "1", "COLUMNS": "70"},
        {"FORCE_COLOR": "", "COLUMNS": "70"},
        {"TTY_COMPATIBLE": "1"},
        {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1", "COLUMNS": "90"},
        {"TERM": "dumb", "COLUMNS": "33"},
    ],
)
def test_plain_width_is_richs(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No colour and the width where rich's Console() on stdout has them; None where it colours."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal, as a pipe
    console = Console(_environ=environ)
    expected = console.width if console.color_system is None else None
    assert plain_width(environ) == expected
