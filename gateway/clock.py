"""Clock care: is the gateway's own clock trustworthy, and may a terminal's clock be corrected now?

Setting a terminal's clock from a gateway whose clock is wrong would spread the error to
every punch taken afterwards, so a correction needs a *synchronised* gateway clock. That is
asked of the system, in order of authority:

1. `timedatectl show -p NTPSynchronized --value` (systemd; covers timesyncd, chrony, ntpd),
2. `/run/systemd/timesync/synchronized` (timesyncd touches it on every sync; absence proves nothing),
3. the kernel's own view, `adjtimex(2)` with no modes: TIME_ERROR means "not synchronised".

When none of them can answer, the status is *unknown*, which is reported as such and never
treated as synchronised. The answer is cached briefly: 500 terminals must not each spawn a
process per contact.

The correction policy is bounded on both sides: drift below the lower bound is noise, and
drift above the upper bound is more likely a wrong timezone, a dead battery or a swapped
terminal than a slow clock — a case for a person, not for an automatic fix.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
TIME_ERROR = 5  # adjtimex(2) clock state: "clock not synchronized"
CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Whether the gateway's clock is synchronised: True, False, or None when nobody can say."""

    synchronised: bool | None
    source: str  # timedatectl, timesyncd, adjtimex, config, or none
    detail: str


def _from_timedatectl(run: Callable[[list[str]], str | None]) -> SyncStatus | None:
    answer = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if answer is None:
        return None
    value = answer.strip().lower()
    if value in ("yes", "no"):
        return SyncStatus(value == "yes", "timedatectl", f"NTPSynchronized={value}")
    return None


def _from_timesyncd(flag: Path) -> SyncStatus | None:
    try:
        if flag.exists():
            return SyncStatus(True, "timesyncd", f"{flag} exists")
    except OSError:
        pass
    return None  # no flag: timesyncd may simply not be the service in use


def _kernel_state() -> int | None:
    """adjtimex(2) read-only: the kernel's clock state, or None where there is no such call."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    # struct timex is ~208 bytes on 64-bit Linux; a zeroed, larger buffer means modes=0 (read only).
    buffer = ctypes.create_string_buffer(512)
    state = int(adjtimex(buffer))
    return None if state < 0 else state


def _from_adjtimex(kernel_state: Callable[[], int | None]) -> SyncStatus | None:
    state = kernel_state()
    if state is None:
        return None
    if state == TIME_ERROR:
        return SyncStatus(False, "adjtimex", "kernel reports the clock unsynchronised (TIME_ERROR)")
    return SyncStatus(True, "adjtimex", f"kernel clock state {state}")


def _run_command(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def system_clock_status(
    *,
    run: Callable[[list[str]], str | None] = _run_command,
    timesync_flag: Path = TIMESYNC_FLAG,
    kernel_state: Callable[[], int | None] = _kernel_state,
) -> SyncStatus:
    """Ask the system whether its clock is synchronised (blocking: call off the event loop)."""
    for answer in (
        _from_timedatectl(run),
        _from_timesyncd(timesync_flag),
        _from_adjtimex(kernel_state),
    ):
        if answer is not None:
            return answer
    return SyncStatus(None, "none", "no time sync status available (no timedatectl, timesyncd or adjtimex)")


class GatewayClock:
    """The gateway-wide answer to "is our clock synchronised?", cached for CACHE_SECONDS."""

    def __init__(
        self,
        mode: Literal["check", "trust"] = "check",
        *,
        probe: Callable[[], SyncStatus] = system_clock_status,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.mode = mode
        self._probe = probe
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, SyncStatus] | None = None
        self._lock = threading.Lock()

    def status(self) -> SyncStatus:
        if self.mode == "trust":
            return SyncStatus(True, "config", "gateway_clock = trust (not checked)")
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            answer = self._probe()
            if self._cached is None or self._cached[1] != answer:
                log.info(
                    "gateway_clock_status",
                    synchronised=answer.synchronised,
                    source=answer.source,
                    detail=answer.detail,
                )
            self._cached = (now, answer)
            return answer


@dataclass(frozen=True, slots=True)
class CorrectionPolicy:
    """When to set a terminal's clock: drift strictly between `min_seconds` and `max_seconds`."""

    min_seconds: float
    max_seconds: float  # 0 disables correction

    @property
    def enabled(self) -> bool:
        return self.max_seconds > 0

    def decide(self, drift: float | None, sync: SyncStatus | None) -> tuple[bool, str]:
        """(correct?, why). `sync` is only consulted when the drift would qualify."""
        if not self.enabled:
            return False, "clock correction disabled"
        if drift is None:
            return False, "terminal clock unknown or invalid"
        size = abs(drift)
        if size <= self.min_seconds:
            return False, f"drift {drift:+.0f} s within {self.min_seconds:g} s"
        if size >= self.max_seconds:
            return False, f"drift {drift:+.0f} s beyond the {self.max_seconds:g} s correction limit"
        if sync is None or sync.synchronised is None:
            return False, "gateway clock sync status unknown: not correcting"
        if not sync.synchronised:
            return False, f"gateway clock not synchronised ({sync.detail}): not correcting"
        return True, f"drift {drift:+.0f} s; gateway clock synchronised ({sync.source})"


class ClockCare:
    """A terminal's correction policy plus the gateway-wide sync check, as the worker uses them."""

    def __init__(self, policy: CorrectionPolicy, gateway_clock: GatewayClock) -> None:
        self.policy = policy
        self.gateway_clock = gateway_clock

    async def should_correct(self, drift: float | None) -> tuple[bool, str]:
        """(correct?, why); asks the system about its clock only when the drift qualifies."""
        correct, why = self.policy.decide(drift, SyncStatus(True, "unchecked", ""))
        if not correct:
            return False, why
        sync = await asyncio.to_thread(self.gateway_clock.status)
        return self.policy.decide(drift, sync)
