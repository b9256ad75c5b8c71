"""The record ids the gateway gives the punches of a push-terminal emulator (as `zk.py` for the
pulled one): what a test or the chaos harness reconciles an upload against."""

from __future__ import annotations

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk_push.emulator import PushRecord, ZkPushEmulator
from punchgate.gateway.normalize import record_id


def push_record_id(serial_number: str, record: PushRecord) -> str:
    """The id of one emulated record, exactly as the gateway normalises the uploaded line."""
    raw = RawPunch(user_id=record.user_id, timestamp=record.when, state=record.state, verify=record.verify)
    return record_id(serial_number, raw)


def push_expected_ids(emulator: ZkPushEmulator) -> set[str]:
    """The id of every record the emulated terminal holds (uploaded or not)."""
    return {push_record_id(emulator.sn, r) for r in emulator.records}
