"""What every Anviz link does alike: one request, its reply, bounded retries, counted garbage.

`Link.request()` is the only call the driver needs. It sends a frame, waits for the reply
with the expected ACK from the expected device id, and retries a bounded number of times
when nothing comes back or what comes back is garbage. Garbage is logged with its raw bytes
(hex) and counted, never raised to the caller unless every attempt failed. How one attempt
goes over the wire is each subclass's business: serial_link.py and tcp_link.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import structlog

from punchgate.drivers.anviz.commands import RET_SUCCESS
from punchgate.drivers.anviz.frames import Garbage, Request, Response
from punchgate.drivers.base import ProtocolError, UnreachableError

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class LinkStats:
    """Counters for one terminal's link, reported in DeviceInfo.extra and the probe."""

    requests: int = 0
    retries: int = 0
    garbage_frames: int = 0
    garbage_bytes: int = 0
    no_reply: int = 0
    unexpected_frames: int = 0


class AttemptFailed(Exception):
    """One attempt got no usable reply; `garbled` tells garbage from silence.

    Raised by a link's `_attempt` (and the serial bus under it), caught by `Link.request`,
    which retries; callers of a link never see it.
    """

    def __init__(self, detail: str, *, garbled: bool) -> None:
        super().__init__(detail)
        self.garbled = garbled


def expected_ack(request: Request) -> int:
    return request.command | 0x80


class Link(ABC):
    """One terminal's path: send a request, get its reply, retry a bounded number of times."""

    def __init__(self, *, name: str, device_id: int, timeout: float, attempts: int) -> None:
        self.name = name
        self.device_id = device_id
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.stats = LinkStats()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _attempt(self, request: Request) -> Response: ...

    @property
    def supports_push(self) -> bool:
        return False

    async def request(
        self, request: Request, *, retry: Request | None = None, attempts: int | None = None
    ) -> Response:
        """Send `request` (then `retry`, when given, on later attempts) and return the reply.

        A reply with RET != success is returned, not raised: it is a valid answer. Raises
        UnreachableError when nothing answered at all, ProtocolError when only garbage did.
        """
        self.stats.requests += 1
        attempts = attempts or self.attempts
        garbled = False
        last = ""
        for attempt in range(attempts):
            frame = request if attempt == 0 or retry is None else retry
            if attempt:
                self.stats.retries += 1
                log.info("anviz_retry", device=self.name, attempt=attempt + 1, reason=last)
            try:
                return await self._attempt(frame)
            except AttemptFailed as failure:
                garbled = garbled or failure.garbled
                last = str(failure)
                if not failure.garbled:
                    self.stats.no_reply += 1
        what = f"command 0x{request.command:02X} to device {self.device_id}"
        if garbled:
            raise ProtocolError(f"{what}: only garbage after {attempts} attempts ({last})", device=self.name)
        raise UnreachableError(f"{what}: no answer after {attempts} attempts ({last})", device=self.name)

    async def request_ok(
        self, request: Request, *, retry: Request | None = None, attempts: int | None = None
    ) -> Response:
        """Like `request`, but a refusal (RET != success) is a ProtocolError."""
        response = await self.request(request, retry=retry, attempts=attempts)
        if response.ret != RET_SUCCESS:
            raise ProtocolError(
                f"command 0x{request.command:02X} refused with RET 0x{response.ret:02X}", device=self.name
            )
        return response

    def _count_garbage(self, garbage: Garbage, where: str) -> None:
        self.stats.garbage_frames += 1
        self.stats.garbage_bytes += len(garbage.raw)
        log.warning(
            "anviz_garbage_discarded",
            device=self.name,
            where=where,
            reason=garbage.reason,
            raw=garbage.raw.hex(),
            total=self.stats.garbage_frames,
        )
