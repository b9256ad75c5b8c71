"""Firmware profiles: what differs between ZK terminal families on the wire.

Each emulated terminal runs one profile. The numbers follow docs/protocols/zk.md
("Firmware families a gateway meets").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from punchgate.drivers.zk.protocol import EightByteVariant

Transport = Literal["tcp", "udp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareProfile:
    """The wire formats and identity defaults of one firmware family."""

    name: str
    transports: frozenset[Transport]
    attendance_record_size: int
    eight_byte_variant: EightByteVariant = "pyzk"
    user_record_size: int
    live_event_size: int
    free_sizes_length: int
    platform: str
    firmware_version: str
    device_name: str
    pin_width: int
    user_capacity: int
    record_capacity: int
    finger_capacity: int
    face_capacity: int = 0
    numeric_user_ids: bool = False  # the record layouts hold user ids as integers
    # OPTIONS_RRQ keys this firmware knows (besides the per-terminal identity keys).
    # A key missing here is answered with ACK_ERROR, as real terminals do.
    options: dict[str, str] = field(default_factory=dict)


TFT = FirmwareProfile(
    name="tft",
    transports=frozenset({"tcp", "udp"}),
    attendance_record_size=40,
    user_record_size=72,
    live_event_size=32,
    free_sizes_length=92,
    platform="ZEM600_TFT",
    firmware_version="Ver 6.60 Apr 28 2017",
    device_name="F19",
    pin_width=9,
    user_capacity=10000,
    record_capacity=200000,
    finger_capacity=3000,
    face_capacity=0,
    options={
        "~ZKFPVersion": "10",
        "ZKFaceVersion": "0",
        "~ExtendFmt": "1",
        "~UserExtFmt": "1",
        "FaceFunOn": "0",
        "CompatOldFirmware": "0",
        "~OS": "1",
        "ExtendOPLog": "1",
        "WorkCode": "0",
        "~SSR": "1",
        "~IsOnlyRFMachine": "0",
    },
)

# Black-and-white screen terminals: UDP only, numeric user ids, 16-byte records.
BW = FirmwareProfile(
    name="bw",
    transports=frozenset({"udp"}),
    attendance_record_size=16,
    user_record_size=28,
    live_event_size=14,
    free_sizes_length=80,
    platform="ZEM560",
    firmware_version="Ver 6.39 Jan  5 2011",
    device_name="K20",
    pin_width=9,
    user_capacity=500,
    record_capacity=50000,
    finger_capacity=500,
    numeric_user_ids=True,
    options={
        "~ZKFPVersion": "9",
        "~ExtendFmt": "0",
        "CompatOldFirmware": "1",
        "~OS": "1",
        "WorkCode": "0",
    },
)

# The oldest black-and-white firmware: 8-byte records in the ZEM500 byte order
# (uid, verify|state nibbles, work code, time) and 10-byte live events.
BW8 = FirmwareProfile(
    name="bw8",
    transports=frozenset({"udp"}),
    attendance_record_size=8,
    eight_byte_variant="zem500",
    user_record_size=28,
    live_event_size=10,
    free_sizes_length=80,
    platform="ZEM500",
    firmware_version="Ver 6.21 Nov 19 2008",
    device_name="MA300",
    pin_width=5,
    user_capacity=500,
    record_capacity=50000,
    finger_capacity=500,
    numeric_user_ids=True,
    options={"~ZKFPVersion": "9", "~ExtendFmt": "0", "CompatOldFirmware": "1", "~OS": "1"},
)

PROFILES: dict[str, FirmwareProfile] = {p.name: p for p in (TFT, BW, BW8)}


def get_profile(name: str) -> FirmwareProfile:
    """The profile called `name`, with a clear error listing the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown ZK firmware profile {name!r}; known: {', '.join(PROFILES)}") from None
