"""What every Anviz link does alike: one request, its reply, bounded retries, counted garbage.

`Link.request()` is the only call the driver needs. It sends a frame, waits for the reply
with the expected ACK from the expected device id, and retries a bounded number of times
when nothing comes back or what comes back is garbage. Garbage is logged with its raw bytes
(hex, the first `LOG_PREVIEW_BYTES` of them) and counted, never raised to the caller unless
every attempt failed. A peer that sends nothing but garbage must not flood the log either:
past `LOG_BURST` lines a second a link only counts, and its next line says how many it left
out. How one attempt goes over the wire is each subclass's business: serial_link.py and
tcp_link.py.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import structlog

from punchgate.drivers.anviz.commands import RET_SUCCESS
from punchgate.drivers.anviz.frames import Garbage, Request, Response, hex_preview
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
    unanswered_heartbeats: int = 0  # the peer sent heartbeats but did not read our pongs
    log_lines_suppressed: int = 0


LOG_BURST = 20  # warnings a link logs per second about what it discards; the rest are counted
GARBAGE_KEPT_PER_ATTEMPT = 32  # garbage items one serial attempt keeps for the log


class LogBudget:
    """At most `burst` log lines per `window` seconds; says how many were left out meanwhile."""

    def __init__(self, burst: int = LOG_BURST, window: float = 1.0) -> None:
        self.burst = burst
        self.window = window
        self._window_start = float("-inf")
        self._used = 0
        self._left_out = 0

    def take(self) -> int | None:
        """None: leave this line out. Otherwise log it, with the number of lines left out before."""
        now = time.monotonic()
        if now - self._window_start >= self.window:
            self._window_start, self._used = now, 0
        if self._used >= self.burst:
            self._left_out += 1
            return None
        self._used += 1
        left_out, self._left_out = self._left_out, 0
        return left_out


@dataclass(slots=True)
class GarbageTally:
    """What one attempt discarded: the first items kept whole for the log, the rest only counted,
    so that a peer sending nothing but garbage for the whole timeout costs no memory."""

    kept: list[Garbage] = field(default_factory=list)
    extra_items: int = 0
    extra_bytes: int = 0
    last_reason: str = ""

    def add(self, garbage: Garbage) -> None:
        self.last_reason = garbage.reason
        if len(self.kept) < GARBAGE_KEPT_PER_ATTEMPT:
            self.kept.append(garbage)
        else:
            self.extra_items += 1
            self.extra_bytes += len(garbage.raw)


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
        self._log_budget = LogBudget()

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
        self._warn(
            "anviz_garbage_discarded",
            where=where,
            reason=garbage.reason,
            raw=hex_preview(garbage.raw),
            size=len(garbage.raw),
            total=self.stats.garbage_frames,
        )

    def _count_tally(self, tally: GarbageTally, where: str) -> None:
        for garbage in tally.kept:
            self._count_garbage(garbage, where)
        if tally.extra_items:
            self.stats.garbage_frames += tally.extra_items
            self.stats.garbage_bytes += tally.extra_bytes
            self._warn(
                "anviz_garbage_discarded",
                where=where,
                reason=f"{tally.extra_items} more pieces, not kept",
                size=tally.extra_bytes,
                total=self.stats.garbage_frames,
            )

    def _warn(self, event: str, **fields: object) -> None:
        """A warning about discarded bytes, within the link's log budget."""
        left_out = self._log_budget.take()
        if left_out is None:
            self.stats.log_lines_suppressed += 1
            return
        if left_out:
            fields["suppressed"] = left_out
        log.warning(event, device=self.name, **fields)
