"""What an emulated terminal counts, and the one holder every part of it counts into.

`EmulatorCounters` is the frozen snapshot the public API hands out, so a snapshot a test
keeps never changes under it; `CounterBook` holds the current one and replaces it on
every bump.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EmulatorCounters:
    """What the emulator has seen and done since start."""

    packets: int = 0
    sessions_served: int = 0
    bad_checksum_count: int = 0
    garbage_count: int = 0  # bytes on TCP that were not a frame, or too-short datagrams
    unknown_commands: int = 0
    auth_failures: int = 0
    busy_rejections: int = 0  # UDP datagrams from a second client while a session was open
    events_sent: int = 0
    punches_refused: int = 0
    restarts: int = 0


class CounterBook:
    """The current `EmulatorCounters`, replaced (never mutated) by `bump`."""

    def __init__(self) -> None:
        self.current = EmulatorCounters()

    def bump(self, **deltas: int) -> None:
        """Add each delta to the counter of that name."""
        current = self.current
        self.current = dataclasses.replace(current, **{k: getattr(current, k) + v for k, v in deltas.items()})
