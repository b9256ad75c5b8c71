"""Fixtures: emulated Anviz terminals on real pseudo-terminals and loopback TCP, and drivers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from punchgate.drivers.anviz.driver import AnvizDriver
from punchgate.drivers.anviz.emulator import EmulatedTerminal, PtyBus, TcpServer
from punchgate.drivers.anviz.endpoint import parse_endpoint

# Short timings keep the suite fast; a pty delivers bytes at once, like an idle line.
SERIAL_OPTIONS = "gap_ms=0&quiet_ms=40"
TIMEOUT = 0.3

PtyFactory = Callable[..., PtyBus]
DriverFactory = Callable[..., AnvizDriver]


@pytest.fixture
def pty_bus() -> Iterator[PtyFactory]:
    buses: list[PtyBus] = []

    def start(*terminals: EmulatedTerminal, echo: bool = False) -> PtyBus:
        bus = PtyBus(list(terminals), echo=echo).start()
        buses.append(bus)
        return bus

    yield start
    for bus in buses:
        bus.stop()


@pytest.fixture
def tcp_server() -> Iterator[Callable[..., TcpServer]]:
    servers: list[TcpServer] = []

    def start(*terminals: EmulatedTerminal) -> TcpServer:
        server = TcpServer(list(terminals)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def make_driver() -> AsyncIterator[DriverFactory]:
    drivers: list[AnvizDriver] = []

    def make(
        endpoint: str, device_id: int, *, name: str = "", attempts: int = 3, **kwargs: object
    ) -> AnvizDriver:
        driver = AnvizDriver(
            name=name or f"anviz-{device_id}",
            endpoint=parse_endpoint(endpoint),
            device_id=device_id,
            timeout=TIMEOUT,
            attempts=attempts,
            **kwargs,  # type: ignore[arg-type]
        )
        drivers.append(driver)
        return driver

    yield make
    await asyncio.gather(*(d.close() for d in drivers))


def serial_url(bus: PtyBus) -> str:
    return f"serial://{bus.path}?{SERIAL_OPTIONS}"
