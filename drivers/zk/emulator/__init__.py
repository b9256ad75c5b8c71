"""A faithful simulated ZK terminal (device side of the protocol), with fault injection.

    async with ZkEmulator(profile="tft", comm_key=0) as emu:
        emu.generate_log(records=1000, days=10, users=20)
        ... connect a client to 127.0.0.1:emu.tcp_port ...
        emu.add_punch("7")            # fires a live event to a registered session
        await emu.set_fault("slow_replies", delay=3)

See docs/emulator.md for profiles, faults and the one-session policy.
"""

from punchgate.drivers.zk.emulator.faults import FAULTS, Fault
from punchgate.drivers.zk.emulator.profiles import PROFILES, FirmwareProfile, get_profile
from punchgate.drivers.zk.emulator.terminal import EmulatorCounters, ZkEmulator

__all__ = ["FAULTS", "PROFILES", "EmulatorCounters", "Fault", "FirmwareProfile", "ZkEmulator", "get_profile"]
