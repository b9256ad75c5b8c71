"""Ground truth for reconciliation: the ids the gateway must produce for an emulator's log."""

from __future__ import annotations

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.normalize import record_id


def expected_ids(emulator: ZkEmulator) -> list[str]:
    """Ids of every record on the terminal, in log order (computed independently of the driver)."""
    out = []
    for record in emulator.records:
        assert record.timestamp is not None
        raw = RawPunch(
            user_id=record.user_id, timestamp=record.timestamp, state=record.state, verify=record.verify
        )
        out.append(record_id(emulator.serial_number, raw))
    return out
