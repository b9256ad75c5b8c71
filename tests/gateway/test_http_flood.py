"""A flood against the running daemon's HTTP API: 1,100 half-open connections, over real sockets.

Half of them send nothing, half a partial request head, and none of them ever finishes. While
they are held (and for a while after, when the head deadline closes what is left), a monitor
asks GET /healthz on fresh connections: every answer must be 200 within 2 s. The daemon must
hold only a bounded number of sockets, and its log must stay a handful of lines (counted
warnings, no tracebacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.http import BACKLOG, HEADER_TIMEOUT, MAX_CONNECTIONS
from tests.support.broker import free_port
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess

FLOOD = 1100
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1"  # no end of line, no end of head
HEALTHZ_DEADLINE = 2.0  # seconds


@pytest.fixture
async def emulator() -> AsyncIterator[ZkEmulator]:
    terminal = ZkEmulator(serial_number="SNFLOOD01")
    await terminal.start()
    try:
        yield terminal
    finally:
        await terminal.stop()


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _nofile_limits(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no Max open files line")


async def _healthz(port: int) -> tuple[int, float]:
    """(status, seconds) of one GET /healthz on a fresh connection; status 0 if it failed."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(HEALTHZ_DEADLINE * 2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                await writer.drain()
                answer = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return 0, time.monotonic() - started
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


async def _monitor(port: int, stop: asyncio.Event, results: list[tuple[int, float]]) -> None:
    while not stop.is_set():
        results.append(await _healthz(port))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)  # pacing the monitor, not synchronising


async def _half_open(port: int, index: int) -> asyncio.StreamWriter | None:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    if index % 2:
        with contextlib.suppress(OSError):
            writer.write(PARTIAL_HEAD)
    return writer


@pytest.mark.slow
async def test_half_open_flood_does_not_starve_healthz(
    gateway_factory: Callable[..., GatewayProcess], emulator: ZkEmulator
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD + 500:  # this process holds every flooding socket
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    port = free_port()
    gateway = gateway_factory([zk_terminal("t1", emulator, live=False, poll_interval=60)], http_port=port)
    gateway.start()
    soft_limit, hard_limit = _nofile_limits(gateway.pid)
    assert soft_limit == hard_limit  # raised at start-up
    assert (await _healthz(port))[0] == 200
    files_before = _open_files(gateway.pid)
    lines_before = len(gateway.log_text().splitlines())

    stop = asyncio.Event()
    probes: list[tuple[int, float]] = []
    monitor = asyncio.create_task(_monitor(port, stop, probes))
    writers: list[asyncio.StreamWriter | None] = []
    most_files = 0
    try:
        for start in range(0, FLOOD, 100):
            writers += await asyncio.gather(*(_half_open(port, i) for i in range(start, start + 100)))
            most_files = max(most_files, _open_files(gateway.pid))
        opened = sum(w is not None for w in writers)
        # Hold them past the head deadline, so the daemon closes what it still held.
        deadline = time.monotonic() + HEADER_TIMEOUT + 2
        while time.monotonic() < deadline:
            most_files = max(most_files, _open_files(gateway.pid))
            await asyncio.sleep(0.2)  # sampling the fd count, not synchronising
    finally:
        stop.set()
        await monitor
        for writer in writers:
            if writer is not None:
                writer.close()
    flood_lines = gateway.log_text().splitlines()[lines_before:]

    assert opened == FLOOD
    assert len(probes) >= 20
    assert all(status == 200 for status, _ in probes), probes
    slowest = max(seconds for _, seconds in probes)
    assert slowest < HEALTHZ_DEADLINE, probes
    assert (
        most_files <= files_before + MAX_CONNECTIONS + 2 * BACKLOG
    )  # + sockets closing after an accept burst
    assert len(flood_lines) <= 10, flood_lines
    events = [json.loads(line) for line in flood_lines if line.startswith("{")]
    assert len(events) == len(flood_lines)  # JSON lines only: nothing printed around the logger
    http = {e["event"] for e in events if e["event"].startswith("http")}
    assert http == {"http_connection_evicted", "http_request_head_timeout"}, flood_lines
    assert not [e for e in events if e["level"] == "error"]
    assert not any("Traceback" in line for line in flood_lines)
    assert (await _healthz(port))[0] == 200

    assert gateway.stop() == 0  # the summaries come out when the server closes
    evicted = [e for e in gateway.events("http_connection_evicted") if e.get("summary")]
    timed_out = [e for e in gateway.events("http_request_head_timeout") if e.get("summary")]
    print(
        f"\nflood: {opened} half-open connections; /healthz {len(probes)} probes, slowest "
        f"{slowest * 1000:.0f} ms; daemon fds {files_before} -> at most {most_files}; "
        f"{len(flood_lines)} log lines during the flood; summaries: evicted "
        f"{[e['suppressed'] for e in evicted]}, head timeouts {[e['suppressed'] for e in timed_out]}"
    )
    # The rate-limited lines lose no count: per kind, the full lines plus what they say was
    # suppressed add up to the guard's own counter, which the last line of the kind carries.
    # (Not the flood's size: a connection accepted late under load may be closed by this test
    # before its head deadline, and is then neither evicted nor timed out.)
    counted: dict[str, int] = {}
    for event, counter in (
        ("http_connection_evicted", "evicted"),
        ("http_request_head_timeout", "timed_out"),
    ):
        lines = gateway.events(event)
        told = sum(e.get("suppressed", 0) + (0 if e.get("summary") else 1) for e in lines)
        assert told == lines[-1][counter], lines
        counted[counter] = told
    # All but the connections still held when the flood closed its side were let go by the guard.
    assert counted["evicted"] + counted["timed_out"] >= FLOOD - MAX_CONNECTIONS, counted
