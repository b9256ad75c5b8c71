"""Simulated Anviz terminals speaking the device side, over a pseudo-terminal or TCP.

The one import for tests, the CLI and the demo: `from punchgate.drivers.anviz.emulator import
EmulatedTerminal, Faults, PtyBus, TcpServer`. The code lives in modules by job:
  emulator_terminal.py  one device: its records with their new-record flags, clock, settings
  emulator_handlers.py  its answer to each command, including the 0x40 batch cursor
  emulator_faults.py    fault injection: silence, dropped requests, lost or damaged replies
  emulator_servers.py   the wire: several terminals on one pseudo-terminal, or a TCP server
"""

from __future__ import annotations

from punchgate.drivers.anviz.emulator_faults import NOISE, Faults
from punchgate.drivers.anviz.emulator_servers import PtyBus, TcpServer
from punchgate.drivers.anviz.emulator_terminal import EmulatedTerminal

__all__ = ["NOISE", "EmulatedTerminal", "Faults", "PtyBus", "TcpServer"]
