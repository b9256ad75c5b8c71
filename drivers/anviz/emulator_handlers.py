"""What an emulated Anviz terminal answers to each command: one handler per command code.

Each handler takes the terminal and the request's DATA and returns the reply's DATA, or raises
(CodecError, ValueError, IndexError) to make the terminal refuse with RET_FAILED. They run
under the terminal's lock, called from `EmulatedTerminal.handle()`, which owns the framing
and the faults; `HANDLERS` maps command codes to them, and an unknown code is refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from punchgate.drivers.anviz.commands import (
    CLEAR_DELETE_ALL,
    CLEAR_NEW_FLAG_ALL,
    CLEAR_NEW_FLAG_COUNT,
    CMD_CLEAR_RECORDS,
    CMD_DELETE_USER,
    CMD_DOWNLOAD_RECORDS,
    CMD_GET_CAPACITY,
    CMD_GET_CONFIG1,
    CMD_GET_CONFIG2,
    CMD_GET_DEVICE_ID,
    CMD_GET_MODEL,
    CMD_GET_RECORD_INFO,
    CMD_GET_SERIAL,
    CMD_GET_TIME,
    CMD_GET_USERS,
    CMD_REBOOT,
    CMD_SET_CONFIG2,
    CMD_SET_TIME,
    CMD_SET_USERS,
    DOWNLOAD_ALL_FROM_START,
    DOWNLOAD_CONTINUE,
    DOWNLOAD_NEW_FROM_START,
    DOWNLOAD_RESEND_LAST,
    MAX_RECORDS_PER_PACKET,
    REBOOT_PARAMETER,
    RET_NO_SUCH_USER,
    USERS_PER_PACKET,
)
from punchgate.drivers.anviz.payloads import (
    CONFIG2_SIZE,
    Capacity,
    RecordInfo,
    decode_clock,
    encode_clock,
    encode_config1,
    encode_records,
    encode_text,
)
from punchgate.drivers.anviz.staff import decode_batch, encode_batch

if TYPE_CHECKING:
    from punchgate.drivers.anviz.emulator_terminal import EmulatedTerminal


@dataclass(slots=True)
class DownloadSession:
    """The 0x40 batch cursor: which records a download covers and how far it got."""

    selection: list[int] = field(default_factory=list)  # indexes into records, snapshot at start
    cursor: int = 0
    last_batch: list[int] = field(default_factory=list)


class RefusedWith(Exception):
    """Raised by a handler to refuse with a particular RET (default refusals are RET_FAILED)."""

    def __init__(self, ret: int, reason: str) -> None:
        super().__init__(reason)
        self.ret = ret


def _exact(data: bytes, size: int) -> None:
    if len(data) != size:
        raise ValueError(f"expected {size} data bytes, got {len(data)}")


def get_serial(terminal: EmulatedTerminal, data: bytes) -> bytes:
    return encode_text(terminal.serial_number, 16)


def get_config1(terminal: EmulatedTerminal, data: bytes) -> bytes:
    return encode_config1(terminal.firmware)


def get_config2(terminal: EmulatedTerminal, data: bytes) -> bytes:
    return bytes(terminal.config2)


def set_config2(terminal: EmulatedTerminal, data: bytes) -> bytes:
    _exact(data, CONFIG2_SIZE)
    for i, value in enumerate(data):
        if value != 0xFF:  # 0xFF leaves a setting unchanged
            terminal.config2[i] = value
    return b""


def get_time(terminal: EmulatedTerminal, data: bytes) -> bytes:
    return encode_clock(terminal.clock())


def set_time(terminal: EmulatedTerminal, data: bytes) -> bytes:
    _exact(data, 6)
    terminal.clock_offset = decode_clock(data) - dt.datetime.now().replace(microsecond=0)
    return b""


def get_record_info(terminal: EmulatedTerminal, data: bytes) -> bytes:
    users = len(terminal.staff)
    info = RecordInfo(users, users, 0, 0, len(terminal.records), sum(terminal.new_flags))
    return info.encode()


def get_capacity(terminal: EmulatedTerminal, data: bytes) -> bytes:
    return Capacity(terminal.user_capacity, terminal.user_capacity * 2, terminal.record_capacity).encode()


def get_device_id(terminal: EmulatedTerminal, data: bytes) -> bytes:
    return terminal.device_id.to_bytes(4, "big")


def get_model(terminal: EmulatedTerminal, data: bytes) -> bytes:
    return encode_text(terminal.model, 8)


def download_records(terminal: EmulatedTerminal, data: bytes) -> bytes:
    _exact(data, 2)
    mode, wanted = data[0], min(data[1], MAX_RECORDS_PER_PACKET)
    state = terminal.download
    if mode == DOWNLOAD_ALL_FROM_START:
        terminal.download = state = DownloadSession(selection=list(range(len(terminal.records))))
    elif mode == DOWNLOAD_NEW_FROM_START:
        terminal.download = state = DownloadSession(
            selection=[i for i, new in enumerate(terminal.new_flags) if new]
        )
    elif mode == DOWNLOAD_CONTINUE:
        pass
    elif mode == DOWNLOAD_RESEND_LAST:
        return encode_records([terminal.records[i] for i in state.last_batch])
    else:
        raise ValueError(f"unknown download mode {mode}")
    batch = state.selection[state.cursor : state.cursor + wanted]
    state.cursor += len(batch)
    state.last_batch = batch
    return encode_records([terminal.records[i] for i in batch])


def clear_records(terminal: EmulatedTerminal, data: bytes) -> bytes:
    _exact(data, 4)
    kind, count = data[0], int.from_bytes(data[1:4], "big")
    if kind == CLEAR_DELETE_ALL:
        done = len(terminal.records)
        terminal.records.clear()
        terminal.new_flags.clear()
    elif kind == CLEAR_NEW_FLAG_ALL:
        done = sum(terminal.new_flags)
        terminal.new_flags = [False] * len(terminal.records)
    elif kind == CLEAR_NEW_FLAG_COUNT:
        done = 0
        for i, new in enumerate(terminal.new_flags):
            if done == count:
                break
            if new:  # oldest first
                terminal.new_flags[i] = False
                done += 1
    else:
        raise ValueError(f"unknown clear type {kind}")
    terminal.download = DownloadSession()
    return done.to_bytes(3, "big")


def get_users(terminal: EmulatedTerminal, data: bytes) -> bytes:
    """0x72: staff records in user id order, up to 8 a packet; D[0] = 1 restarts the cursor."""
    _exact(data, 2)
    if data[0] == 1:
        terminal.user_cursor = 0
    ids = sorted(terminal.staff)
    batch = ids[terminal.user_cursor : terminal.user_cursor + min(data[1], USERS_PER_PACKET)]
    terminal.user_cursor += len(batch)
    return encode_batch([terminal.staff[i] for i in batch])


def set_users(terminal: EmulatedTerminal, data: bytes) -> bytes:
    """0x73: add or replace staff records (matched on user id)."""
    records = decode_batch(data)
    new = {r.user_id for r in records} - set(terminal.staff)
    if len(terminal.staff) + len(new) > terminal.user_capacity:
        raise RefusedWith(0x04, f"user table full ({terminal.user_capacity})")
    for record in records:
        terminal.staff[record.user_id] = record
    return b""


def delete_user(terminal: EmulatedTerminal, data: bytes) -> bytes:
    """0x4C: delete one user (D[5] 0xFF: everything of theirs); RET 0x06 when there is none."""
    _exact(data, 6)
    user_id = int.from_bytes(data[0:5], "big")
    if terminal.staff.pop(user_id, None) is None:
        raise RefusedWith(RET_NO_SUCH_USER, f"no user {user_id}")
    return b""


def reboot(terminal: EmulatedTerminal, data: bytes) -> bytes:
    """0x2E with 0x60: answered, then the terminal "reboots": download cursors start over."""
    if data != bytes([REBOOT_PARAMETER]):
        raise ValueError(f"unknown reboot parameter {data.hex()}")
    terminal.restarts += 1
    terminal.download = DownloadSession()
    terminal.user_cursor = 0
    return b""


HANDLERS: dict[int, Callable[[EmulatedTerminal, bytes], bytes]] = {
    CMD_GET_SERIAL: get_serial,
    CMD_GET_CONFIG1: get_config1,
    CMD_GET_CONFIG2: get_config2,
    CMD_SET_CONFIG2: set_config2,
    CMD_GET_TIME: get_time,
    CMD_SET_TIME: set_time,
    CMD_GET_RECORD_INFO: get_record_info,
    CMD_DOWNLOAD_RECORDS: download_records,
    CMD_GET_DEVICE_ID: get_device_id,
    CMD_GET_MODEL: get_model,
    CMD_CLEAR_RECORDS: clear_records,
    CMD_GET_CAPACITY: get_capacity,
    CMD_GET_USERS: get_users,
    CMD_SET_USERS: set_users,
    CMD_DELETE_USER: delete_user,
    CMD_REBOOT: reboot,
}
