"""An emulated ZKTeco push terminal (the client side of the iclock / ADMS protocol 2.x), with
faults switchable at run time, for trying and testing the push receiver without hardware.

    async with ZkPushEmulator("http://127.0.0.1:8081", "CKUW201960001", records=1000) as emu:
        emu.punch("7")
        emu.set_fault("drop_mid_post", times=1)

`punchgate emulate zk-push --help` runs emulators from the command line; its fault file and
SIGUSR1 switch faults from outside the process.
"""

from punchgate.drivers.zk_push.emulator.counters import PushCounters
from punchgate.drivers.zk_push.emulator.faults import FAULTS, Fault
from punchgate.drivers.zk_push.emulator.terminal import ZkPushEmulator
from punchgate.drivers.zk_push.emulator.wire import OperEntry, PushRecord, PushUser, ServerOptions

__all__ = [
    "FAULTS",
    "Fault",
    "OperEntry",
    "PushCounters",
    "PushRecord",
    "PushUser",
    "ServerOptions",
    "ZkPushEmulator",
]
