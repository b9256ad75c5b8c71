"""Command handlers for the device itself: identity, options, clock, state and control.

Enable/disable, firmware version, OPTIONS read/write, GET_FREE_SIZES, GET/SET_TIME,
REG_EVENT, RESTART, PIN width and STATE, plus the commands a terminal simply acknowledges.
Handlers for the attendance log and user table are in `record_commands`.
"""

from __future__ import annotations

import struct
from typing import Final

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.context import CommandHandler, TerminalContext
from punchgate.drivers.zk.emulator.links import Link
from punchgate.drivers.zk.emulator.replies import Reply, ack
from punchgate.drivers.zk.emulator.session_slot import Session


def terminal_option(ctx: TerminalContext, key: str) -> str | None:
    """The value the terminal gives for an OPTIONS_RRQ key, or None (ACK_ERROR)."""
    terminal = ctx.terminal
    host = terminal.host
    identity = {
        "~SerialNumber": terminal.serial_number,
        "~Platform": terminal.platform,
        "~DeviceName": terminal.device_name,
        "MAC": terminal.mac,
        "IPAddress": host,
        "NetMask": "255.255.255.0",
        "GATEIPAddress": host.rsplit(".", 1)[0] + ".1" if "." in host else "0.0.0.0",
    }
    if key in identity:
        return identity[key]
    return ctx.written_options.get(key, terminal.profile.options.get(key))


def current_free_sizes(ctx: TerminalContext) -> p.FreeSizes:
    """What GET_FREE_SIZES reports now."""
    profile = ctx.terminal.profile
    d = ctx.terminal.data
    records = d.record_count
    has_faces = profile.free_sizes_length >= 92
    return p.FreeSizes(
        users=d.user_count,
        fingers=0,
        records=records,
        oplog=d.oplog_count,
        admins=sum(1 for u in d.users if u.privilege > 0),
        passwords=sum(1 for u in d.users if u.password),
        finger_capacity=profile.finger_capacity,
        user_capacity=d.user_capacity,
        record_capacity=d.record_capacity,
        fingers_free=profile.finger_capacity,
        users_free=max(0, d.user_capacity - d.user_count),
        records_free=max(0, d.record_capacity - records),
        faces=0 if has_faces else None,
        face_capacity=profile.face_capacity if has_faces else None,
    )


def _cmd_ok(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    return ack(session.id, packet)


def _cmd_enable(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    ctx.terminal.enabled = True
    return ack(session.id, packet)


def _cmd_disable(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    ctx.terminal.enabled = False
    return ack(session.id, packet)


def _cmd_version(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    return ack(session.id, packet, ctx.terminal.firmware_version.encode() + b"\x00")


def _cmd_options_read(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    key = p.decode_option_request(packet.data)
    value = ctx.terminal.option(key)
    if value is None:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    return ack(session.id, packet, p.encode_option_reply(key, value))


def _cmd_options_write(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    text = packet.data.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    key, sep, value = text.partition("=")
    if not sep or not key or key.startswith("~"):
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    ctx.written_options[key] = value
    return ack(session.id, packet)


def _cmd_free_sizes(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    terminal = ctx.terminal
    return ack(
        session.id, packet, p.encode_free_sizes(terminal.free_sizes(), terminal.profile.free_sizes_length)
    )


def _cmd_get_time(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    return ack(session.id, packet, struct.pack("<I", p.encode_time(ctx.terminal.clock.now())))


def _cmd_set_time(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    if len(packet.data) != 4:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    try:
        when = p.decode_time(struct.unpack("<I", packet.data)[0])
    except p.ZkFrameError:
        return ack(session.id, packet, code=p.CMD_ACK_ERROR)
    ctx.terminal.clock.set(when)
    ctx.log.info("zk_time_set", time=when.isoformat())
    return ack(session.id, packet)


def _cmd_reg_event(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    data = packet.data.ljust(4, b"\x00")
    session.event_mask = struct.unpack_from("<I", data)[0]
    ctx.log.info("zk_events_registered", mask=session.event_mask)
    return ack(session.id, packet)


def _cmd_restart(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    return Reply([p.build_packet(p.CMD_ACK_OK, session.id, packet.reply)], after="restart")


def _cmd_pin_width(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    return ack(session.id, packet, bytes((ctx.terminal.profile.pin_width,)))


def _cmd_state(ctx: TerminalContext, session: Session, packet: p.ZkPacket, link: Link) -> Reply:
    # The state travels in the session field: 2 = waiting for identification, 0 = idle
    # (disabled). ADRO's capture shows 2 on a working F19.
    return Reply([p.build_packet(p.CMD_ACK_OK, 2 if ctx.terminal.enabled else 0, packet.reply)])


DEVICE_COMMANDS: Final[dict[int, CommandHandler]] = {
    p.CMD_ENABLEDEVICE: _cmd_enable,
    p.CMD_DISABLEDEVICE: _cmd_disable,
    p.CMD_GET_VERSION: _cmd_version,
    p.CMD_OPTIONS_RRQ: _cmd_options_read,
    p.CMD_OPTIONS_WRQ: _cmd_options_write,
    p.CMD_GET_FREE_SIZES: _cmd_free_sizes,
    p.CMD_GET_TIME: _cmd_get_time,
    p.CMD_SET_TIME: _cmd_set_time,
    p.CMD_REG_EVENT: _cmd_reg_event,
    p.CMD_RESTART: _cmd_restart,
    p.CMD_REFRESHDATA: _cmd_ok,
    p.CMD_STARTVERIFY: _cmd_ok,
    p.CMD_CANCELCAPTURE: _cmd_ok,
    p.CMD_UNLOCK: _cmd_ok,
    p.CMD_GET_PINWIDTH: _cmd_pin_width,
    p.CMD_STATE_RRQ: _cmd_state,
}
