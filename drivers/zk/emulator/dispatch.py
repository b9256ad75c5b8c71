"""From a parsed request to its `Reply`: session checks, CONNECT/EXIT/AUTH, the handlers.

CONNECT opens the session (ending any other), EXIT ends it, AUTH checks the comm key.
Every other command needs an open, authenticated session on the same link and goes to
the handler registered for it in `device_commands` or `record_commands`; a command
nobody handles gets ACK_UNKNOWN, as on real firmware.
"""

from __future__ import annotations

import time
from typing import Final

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.context import CommandHandler, TerminalContext
from punchgate.drivers.zk.emulator.device_commands import DEVICE_COMMANDS
from punchgate.drivers.zk.emulator.links import Link
from punchgate.drivers.zk.emulator.record_commands import RECORD_COMMANDS
from punchgate.drivers.zk.emulator.replies import Reply, ack
from punchgate.drivers.zk.emulator.session_slot import Session

COMMAND_HANDLERS: Final[dict[int, CommandHandler]] = {**DEVICE_COMMANDS, **RECORD_COMMANDS}


def dispatch(ctx: TerminalContext, link: Link, session: Session | None, packet: p.ZkPacket) -> Reply:
    """The reply to `packet`; `session` is the open session if it is on `link`."""
    command = packet.command
    if command == p.CMD_CONNECT:
        return _connect(ctx, link, packet)
    if session is None or packet.session != session.id:
        # No session on this link (or a stale one, e.g. after a restart).
        return ack(packet.session, packet, code=p.CMD_ACK_UNAUTH)
    sid = session.id
    if command == p.CMD_EXIT:
        return Reply([p.build_packet(p.CMD_ACK_OK, sid, packet.reply)], after="exit")
    if command == p.CMD_AUTH:
        return _auth(ctx, session, packet)
    if not session.authenticated:
        return ack(sid, packet, code=p.CMD_ACK_UNAUTH)
    handler = COMMAND_HANDLERS.get(command)
    if handler is None:
        ctx.counters.bump(unknown_commands=1)
        ctx.log.info("zk_unknown_command", command=command, data=packet.data[:64].hex())
        return ack(sid, packet, code=p.CMD_ACK_UNKNOWN)
    return handler(ctx, session, packet, link)


def _connect(ctx: TerminalContext, link: Link, packet: p.ZkPacket) -> Reply:
    slot = ctx.slot
    if slot.session is not None:
        slot.end_session("reconnect")
        slot.take(link)
    session_id = ctx.session_ids.popleft() if ctx.session_ids else ctx.rng.randrange(1, 0xFFFF)
    authenticated = ctx.terminal.comm_key == 0
    slot.begin(Session(session_id, link, authenticated, time.monotonic()))
    ctx.counters.bump(sessions_served=1)
    ctx.log.info("zk_session_opened", peer=link.peer, session=f"0x{session_id:04x}", auth=not authenticated)
    code = p.CMD_ACK_OK if authenticated else p.CMD_ACK_UNAUTH
    return ack(session_id, packet, code=code)


def _auth(ctx: TerminalContext, session: Session, packet: p.ZkPacket) -> Reply:
    key = ctx.terminal.comm_key
    if key == 0 or p.comm_key_matches(packet.data, key, session.id):
        session.authenticated = True
        return ack(session.id, packet)
    ctx.counters.bump(auth_failures=1)
    ctx.log.warning("zk_auth_failed", peer=session.link.peer, data=packet.data.hex())
    return ack(session.id, packet, code=p.CMD_ACK_UNAUTH)
