"""The parts of one emulated terminal that its internals share, in one object.

`ZkEmulator` (the facade) builds a `TerminalContext` and passes it to the request cycle,
the command handlers, the fault effects and the restart, instead of letting them reach
into its private attributes. `terminal` gives them the public settings, which tests may
change while the emulator runs; everything else here is state the facade keeps private.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.active_faults import ActiveFaults
from punchgate.drivers.zk.emulator.counters import CounterBook
from punchgate.drivers.zk.emulator.links import Link
from punchgate.drivers.zk.emulator.replies import Reply
from punchgate.drivers.zk.emulator.server import TerminalServer
from punchgate.drivers.zk.emulator.session_slot import Session, SessionSlot

if TYPE_CHECKING:
    from punchgate.drivers.zk.emulator.terminal import ZkEmulator


@dataclass(eq=False)
class TerminalContext:
    """One terminal's shared parts (see the module docstring)."""

    terminal: ZkEmulator
    slot: SessionSlot
    faults: ActiveFaults
    counters: CounterBook
    server: TerminalServer
    log: FilteringBoundLogger
    configured_comm_key: int  # before any `comm_key_changed` fault
    configured_serial: str  # before any `serial_changed` fault
    written_options: dict[str, str] = field(default_factory=dict)  # set by OPTIONS_WRQ
    rng: random.Random = field(default_factory=random.Random)
    # Session ids to hand out first (tests replay captured frames); then random ones.
    session_ids: deque[int] = field(default_factory=deque)


# A command handler answers one request on an open, authenticated session.
CommandHandler = Callable[[TerminalContext, Session, p.ZkPacket, Link], Reply]
