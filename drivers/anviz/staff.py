"""The Anviz staff record (0x72 download, 0x73 upload; anviz.md §5.8): 40 bytes per user.

Layout, as the MxLabs SDK reads and writes it [SDK `Responses/UserInfo.cs`, `Utils/Bytes.cs`]:

| D | content |
|---|---|
| 0-4 | user id, 40 bits, big-endian (the id punches carry) |
| 5-7 | password: `FF FF FF` none; else the high nibble of D[5] is the number of digits and the other 20 bits the value |
| 8-11 | card number, big-endian; `FF FF FF FF` none |
| 12-31 | name, UTF-16BE, NUL-padded: at most 10 characters of the Basic Multilingual Plane |
| 32 | department; 33 group; 34 verification mode |
| 35-36 | enrolled fingerprints (a bit per finger) |
| 37 | PWDH8; 38 keep; 39 message flags |

The record has no privilege: administrators are set at the terminal. A new user gets the
SDK's defaults (department 1, group 1, mode 6, PWDH8 0xFF, keep 0xFF, message 0x40); a changed
one keeps every byte it had except the fields asked to change, fingerprints included.
Pure functions; the driver and the emulator share them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from punchgate.drivers.anviz.frames import CodecError
from punchgate.drivers.anviz.payloads import STAFF_RECORD_SIZE
from punchgate.drivers.base import TerminalUser

MAX_USER_ID = (1 << 40) - 1
NAME_BYTES = 20
MAX_PASSWORD_DIGITS = 6  # 20 bits hold 999999 but not 9999999
NO_CARD = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class StaffRecord:
    user_id: int
    name: str = ""
    password: str | None = None  # digits, None: no password
    card: int | None = None  # None: no card
    department: int = 1
    group: int = 1
    mode: int = 6
    fingers: int = 0
    pwdh8: int = 0xFF
    keep: int = 0xFF
    message: int = 0x40

    def encode(self) -> bytes:
        name = self.name.encode("utf-16-be")
        if len(name) > NAME_BYTES:
            raise CodecError(f"name {self.name!r} needs {len(name)} bytes, the record keeps {NAME_BYTES}")
        return (
            self.user_id.to_bytes(5, "big")
            + _encode_password(self.password)
            + (NO_CARD if self.card is None else self.card).to_bytes(4, "big")
            + name.ljust(NAME_BYTES, b"\0")
            + bytes([self.department, self.group, self.mode])
            + self.fingers.to_bytes(2, "big")
            + bytes([self.pwdh8, self.keep, self.message])
        )

    @classmethod
    def decode(cls, data: bytes) -> StaffRecord:
        if len(data) != STAFF_RECORD_SIZE:
            raise CodecError(f"staff record: expected {STAFF_RECORD_SIZE} bytes, got {len(data)}")
        card = int.from_bytes(data[8:12], "big")
        raw_name = data[12:32]
        name = raw_name.decode("utf-16-be", errors="replace").split("\0", 1)[0]
        return cls(
            user_id=int.from_bytes(data[0:5], "big"),
            name=name,
            password=_decode_password(data[5:8]),
            card=None if card == NO_CARD else card,
            department=data[32],
            group=data[33],
            mode=data[34],
            fingers=int.from_bytes(data[35:37], "big"),
            pwdh8=data[37],
            keep=data[38],
            message=data[39],
        )


def _encode_password(password: str | None) -> bytes:
    if not password:
        return b"\xff\xff\xff"
    value = int(password)
    return bytes([(len(password) << 4) | ((value >> 16) & 0x0F), (value >> 8) & 0xFF, value & 0xFF])


def _decode_password(data: bytes) -> str | None:
    if data == b"\xff\xff\xff":
        return None
    digits = data[0] >> 4
    value = ((data[0] & 0x0F) << 16) | (data[1] << 8) | data[2]
    return str(value).zfill(digits)


def encode_batch(records: list[StaffRecord]) -> bytes:
    return bytes([len(records)]) + b"".join(r.encode() for r in records)


def decode_batch(data: bytes) -> list[StaffRecord]:
    """A 0xF2 reply (or a 0x73 request): D[0] = N, then N records of 40 bytes."""
    if not data:
        raise CodecError("staff batch: no data")
    count = data[0]
    if len(data) != 1 + count * STAFF_RECORD_SIZE:
        raise CodecError(
            f"staff batch of {count}: expected {1 + count * STAFF_RECORD_SIZE} bytes, got {len(data)}"
        )
    size = STAFF_RECORD_SIZE
    return [StaffRecord.decode(data[1 + i * size : 1 + (i + 1) * size]) for i in range(count)]


def to_terminal_user(record: StaffRecord) -> TerminalUser:
    return TerminalUser(
        user_id=str(record.user_id),
        name=record.name,
        privilege=None,  # the record has none
        card=0 if record.card is None else record.card,
        password_set=record.password is not None,
    )


def user_problem(user: TerminalUser) -> str | None:
    """Why `user` cannot be stored in a staff record, or None when it fits."""
    if not (user.user_id.isascii() and user.user_id.isdigit()) or int(user.user_id) > MAX_USER_ID:
        return f"user id {user.user_id!r}: Anviz terminals keep numeric user ids (0..{MAX_USER_ID}) only"
    if user.name is not None:
        size = len(user.name.encode("utf-16-be"))
        if size > NAME_BYTES:
            return (
                f"name {user.name!r} needs {size} bytes in UTF-16, the terminal keeps {NAME_BYTES} "
                "(10 characters)"
            )
    if user.privilege == "admin":
        return "privilege admin: the Anviz staff record has no privilege; set administrators at the terminal"
    if user.password is not None and len(user.password) > MAX_PASSWORD_DIGITS:
        return f"password of {len(user.password)} digits: the terminal keeps {MAX_PASSWORD_DIGITS}"
    if user.card is not None and user.card >= NO_CARD:
        return f"card {user.card}: the terminal keeps card numbers below {NO_CARD}"
    return None


def merged(old: StaffRecord | None, user: TerminalUser) -> StaffRecord:
    """The record to upload for `user`: a new one with the defaults, or `old` with the fields
    `user` sets changed (card 0 removes the card, an empty password the password)."""
    record = old or StaffRecord(user_id=int(user.user_id))
    if user.name is not None:
        record = replace(record, name=user.name)
    if user.password is not None:
        record = replace(record, password=user.password or None)
    if user.card is not None:
        record = replace(record, card=user.card or None)
    return record
