"""Facts about an emulated ZK terminal that tests and benchmarks check the gateway against."""

from __future__ import annotations

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.normalize import record_id


def expected_ids(emulator: ZkEmulator) -> list[str]:
    """Ids of every record on the terminal, in log order, as the gateway must name them.

    Computed from the emulator's own log with `record_id` (serial number + the raw punch
    fields), independently of the driver's parsing: a central system that received an id
    received that very punch.
    """
    out = []
    for record in emulator.records:
        assert record.timestamp is not None
        raw = RawPunch(
            user_id=record.user_id, timestamp=record.timestamp, state=record.state, verify=record.verify
        )
        out.append(record_id(emulator.serial_number, raw))
    return out


def listening_for_punches(emulator: ZkEmulator) -> bool:
    """True once a client's session on the terminal has registered for real-time punch events
    (what the gateway's worker does after its first full read in live mode)."""
    return emulator.listening_for_punches
