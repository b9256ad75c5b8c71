"""Ground truth for reconciliation: the id of every punch an emulated terminal holds.

The emulator's own log is what was produced. Each record's id is computed exactly as the
gateway computes it (serial number + the raw punch fields, `gateway.normalize.record_id`),
so a central system that received an id received that very punch.
"""

from __future__ import annotations

from punchgate.drivers.zk.driver import raw_punch_from_record
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.normalize import record_id


def produced_ids(emulator: ZkEmulator) -> set[str]:
    """Ids of every record in the terminal's log (as the gateway will name them)."""
    serial = emulator.serial_number
    return {record_id(serial, raw_punch_from_record(record)) for record in emulator.records}
