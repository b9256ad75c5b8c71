"""Enrolled-user records: the 28-byte (black-and-white) and 72-byte (TFT) layouts.

One user or a whole data set. Names travel in the terminal's own text encoding (GBK on
terminals sold in China, a legacy code page elsewhere), so encoding takes one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from punchgate.drivers.zk.protocol.errors import ZkFrameError
from punchgate.drivers.zk.protocol.fields import data_set_body, padded_text, text_field

USER_RECORD_SIZES: Final = (28, 72)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """One enrolled user."""

    uid: int
    user_id: str
    name: str = ""
    privilege: int = 0  # bit0 disabled; bits 3-1 level (pyzk: 0 user, 14 admin)
    password: str = ""
    card: int = 0
    group: int = 1
    timezone_flag: int = 0  # 72-byte: 0 = use the group's time zones; 28-byte: the timezone i16
    timezones: tuple[int, int, int] = (0, 0, 0)


def encode_user(user: UserRecord, record_size: int, *, encoding: str = "utf-8") -> bytes:
    """Encode a user in the 28-byte (BW) or 72-byte (TFT) layout; the name in `encoding`
    (terminals sold in China store GBK, others a legacy code page)."""
    if record_size == 72:
        return struct.pack(
            "<HB8s24sIBH3H24s",
            user.uid,
            user.privilege,
            padded_text(user.password, 8, "password"),
            padded_text(user.name, 24, "name", encoding),
            user.card,
            user.group,
            user.timezone_flag,
            *user.timezones,
            padded_text(user.user_id, 24, "user id"),
        )
    if record_size == 28:
        if not user.user_id.isdigit():
            raise ValueError(f"28-byte users hold numeric user ids only, not {user.user_id!r}")
        return struct.pack(
            "<HB5s8sIxBhI",
            user.uid,
            user.privilege,
            padded_text(user.password, 5, "password"),
            padded_text(user.name, 8, "name", encoding),
            user.card,
            user.group,
            user.timezone_flag,
            int(user.user_id),
        )
    raise ValueError(f"unknown user record size {record_size}")


def decode_user(raw: bytes, record_size: int) -> UserRecord:
    """Decode one user record of 28 or 72 bytes."""
    if len(raw) != record_size:
        raise ZkFrameError(f"user record needs {record_size} bytes, got {len(raw)}", raw)
    if record_size == 72:
        uid, priv, pw, name, card, group, tz_flag, tz1, tz2, tz3, user_id = struct.unpack(
            "<HB8s24sIBH3H24s", raw
        )
        return UserRecord(
            uid=uid,
            user_id=text_field(user_id),
            name=text_field(name),
            privilege=priv,
            password=text_field(pw),
            card=card,
            group=group,
            timezone_flag=tz_flag,
            timezones=(tz1, tz2, tz3),
        )
    if record_size == 28:
        uid, priv, pw, name, card, group, tz, user_num = struct.unpack("<HB5s8sIxBhI", raw)
        return UserRecord(
            uid=uid,
            user_id=str(user_num),
            name=text_field(name),
            privilege=priv,
            password=text_field(pw),
            card=card,
            group=group,
            timezone_flag=tz,
        )
    raise ZkFrameError(f"unknown user record size {record_size}", raw[:64])


def decode_user_set(data: bytes, user_count: int) -> list[UserRecord]:
    """Decode a whole user data set (u32 byte count + records)."""
    body = data_set_body(data)
    if user_count <= 0:
        if body:
            raise ZkFrameError(f"{len(body)} bytes of users but a user count of {user_count}", data[:64])
        return []
    size, remainder = divmod(len(body), user_count)
    if remainder or size not in USER_RECORD_SIZES:
        raise ZkFrameError(
            f"{len(body)} bytes do not split into {user_count} users of a known size", data[:64]
        )
    return [decode_user(body[i : i + size], size) for i in range(0, len(body), size)]
