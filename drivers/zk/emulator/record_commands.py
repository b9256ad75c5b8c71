"""Command handlers for the attendance log and the user table.

Reads (direct, or staged with PREPARE_BUFFER and fetched with READ_BUFFER), user writes
and deletes, and the clears. Handlers for identity, options, clock and control are in
`device_commands`.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Final

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.context import CommandHandler, TerminalContext
from punchgate.drivers.zk.emulator.links import Link
from punchgate.drivers.zk.emulator.replies import Reply, ack, bulk_reply
from punchgate.drivers.zk.emulator.session_slot import Session

# A data set up to this size is answered directly with one CMD_DATA (like the captured
# 7-user reply); bigger ones are staged for READ_BUFFER. 1008 keeps the direct packet
# inside the 1024-byte read pyzk does for that reply over UDP.
DIRECT_REPLY_LIMIT = p.TCP_DATA_CHUNK


def _data_set(ctx: TerminalContext, command: int, fct: int) -> bytes | None:
    data = ctx.terminal.data
    if command == p.CMD_ATTLOG_RRQ:
        short = ctx.faults.params("short_read")
        return data.attendance_data_set(missing=int(short.get("missing", 1)) if short is not None else 0)
    if command == p.CMD_USERTEMP_RRQ or (command == p.CMD_DB_RRQ and fct == p.FCT_USER):
        return data.user_data_set()
    if command == p.CMD_DB_RRQ:
        return p.encode_data_set([])  # no fingerprint templates, no operation log kept
    return None


def _cmd_prepare_buffer(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    try:
        request = p.decode_buffer_request(packet.data)
    except p.ZkFrameError:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    data_set = _data_set(ctx, request.command, request.fct)
    if data_set is None:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    if len(data_set) <= DIRECT_REPLY_LIMIT:
        return ack(session.id, packet, data_set, code=p.CMD_DATA)
    session.staged = data_set
    return ack(session.id, packet, p.encode_buffer_ready(len(data_set)))


def _cmd_read_buffer(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    try:
        start, size = p.decode_read_buffer(packet.data)
    except p.ZkFrameError:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    staged = session.staged
    if staged is None or size == 0 or start + size > len(staged):
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    return bulk_reply(session.id, packet, staged[start : start + size], link.chunk_size)


def _cmd_free_data(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    session.staged = None
    return ack(session.id, packet)


def _cmd_plain_read(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    data_set = _data_set(ctx, packet.command, p.FCT_USER)
    assert data_set is not None
    return bulk_reply(session.id, packet, data_set, link.chunk_size)


def _cmd_user_write(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    size = ctx.terminal.profile.user_record_size
    if len(packet.data) != size:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    # The name travels in the terminal's own encoding (the codec decodes text as UTF-8).
    name_at = slice(11, 35) if size == 72 else slice(8, 16)
    name = packet.data[name_at].split(b"\x00", 1)[0].decode(ctx.terminal.data.text_encoding, errors="replace")
    try:
        ctx.terminal.data.put_user(dataclasses.replace(p.decode_user(packet.data, size), name=name))
    except ValueError as exc:
        ctx.log.info("zk_user_rejected", reason=str(exc))
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    return ack(session.id, packet)


def _cmd_delete_user(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    if len(packet.data) < 2:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    (uid,) = struct.unpack_from("<H", packet.data)
    ok = ctx.terminal.data.delete_user(uid)
    return ack(session.id, packet, code=p.CMD_ACK_OK if ok else p.CMD_ACK_ERROR)


def _cmd_clear_attlog(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    dropped = ctx.terminal.data.clear_log()
    ctx.log.info("zk_log_cleared", dropped=dropped)
    return ack(session.id, packet)


def _cmd_clear_data(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    # No argument clears everything; one byte picks a table (1 log, 2 templates, 5 users).
    which = packet.data[0] if packet.data else 0
    if which not in (0, p.FCT_ATTLOG, p.FCT_FINGERTMP, p.FCT_USER):
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    if which in (0, p.FCT_ATTLOG):
        ctx.terminal.data.clear_log()
    if which in (0, p.FCT_USER):
        ctx.terminal.data.clear_users()
    ctx.log.info("zk_data_cleared", table=which)
    return ack(session.id, packet)


RECORD_COMMANDS: Final[dict[int, CommandHandler]] = {
    p.CMD_PREPARE_BUFFER: _cmd_prepare_buffer,
    p.CMD_READ_BUFFER: _cmd_read_buffer,
    p.CMD_FREE_DATA: _cmd_free_data,
    p.CMD_ATTLOG_RRQ: _cmd_plain_read,
    p.CMD_USERTEMP_RRQ: _cmd_plain_read,
    p.CMD_USER_WRQ: _cmd_user_write,
    p.CMD_DELETE_USER: _cmd_delete_user,
    p.CMD_CLEAR_ATTLOG: _cmd_clear_attlog,
    p.CMD_CLEAR_DATA: _cmd_clear_data,
}
