"""One Anviz terminal (one device id) on a shared serial bus, as an async `Link`.

Each attempt runs the blocking exchange of serial_bus.py in a worker thread and counts the
garbage it saw on the way; the bus itself is shared with the other terminals on the port.
"""

from __future__ import annotations

import asyncio

from punchgate.drivers.anviz.endpoint import SerialEndpoint
from punchgate.drivers.anviz.frames import Request, Response
from punchgate.drivers.anviz.link import GarbageTally, Link
from punchgate.drivers.anviz.serial_bus import SerialBus, acquire_bus, release_bus


class SerialLink(Link):
    """One terminal (one device id) on a shared serial bus."""

    def __init__(
        self, endpoint: SerialEndpoint, *, name: str, device_id: int, timeout: float, attempts: int
    ) -> None:
        super().__init__(name=name, device_id=device_id, timeout=timeout, attempts=attempts)
        self.endpoint = endpoint
        self._bus: SerialBus | None = None

    async def open(self) -> None:
        if self._bus is None:
            self._bus = acquire_bus(self.endpoint)

    async def close(self) -> None:
        if self._bus is not None:
            bus, self._bus = self._bus, None
            await asyncio.to_thread(release_bus, bus)

    async def _attempt(self, request: Request) -> Response:
        await self.open()
        assert self._bus is not None
        garbage = GarbageTally()
        try:
            return await asyncio.to_thread(self._bus.exchange, request, self.timeout, garbage)
        finally:
            self._count_tally(garbage, self.endpoint.port)
