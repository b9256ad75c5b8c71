"""One request's whole cycle: raw bytes in, reply out, then whatever the reply set off.

Parse (a corrupt packet is dropped unanswered, as real terminals do), dispatch, wait if
`slow_replies` is on, transmit, then end the session (EXIT) or reboot (RESTART), and let
queued live events go once the reply is out. A client's ACK_OK for a live event is not a
request: it releases the next event and is never answered.
"""

from __future__ import annotations

import asyncio
import time

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.context import TerminalContext
from punchgate.drivers.zk.emulator.dispatch import dispatch
from punchgate.drivers.zk.emulator.links import Link, TcpLink
from punchgate.drivers.zk.emulator.live_events import event_acked, pump_events
from punchgate.drivers.zk.emulator.replies import Reply
from punchgate.drivers.zk.emulator.restart import restart
from punchgate.drivers.zk.emulator.session_slot import Session
from punchgate.drivers.zk.emulator.transmit import transmit


async def serve_packet(ctx: TerminalContext, link: Link, raw: bytes) -> None:
    """Answer one bare packet that arrived on `link` (which holds the session slot)."""
    packet = _parse(ctx, link, raw)
    if packet is None:
        return
    ctx.counters.bump(packets=1)
    session = ctx.slot.session_on(link)
    if packet.command == p.CMD_ACK_OK:
        # The client acknowledging a live event; never answered.
        if session is not None:
            event_acked(ctx, session)
        return
    reply = await _answer(ctx, link, session, packet)
    if reply is None:
        return
    await _follow_up(ctx, link, reply)
    current = ctx.slot.session_on(link)
    if current is not None:
        pump_events(ctx, current)


def _parse(ctx: TerminalContext, link: Link, raw: bytes) -> p.ZkPacket | None:
    try:
        return p.parse_packet(raw)
    except p.ZkChecksumError:
        # Real terminals answer nothing to a corrupt packet: the client times out and
        # retries. Dropping it is safer than guessing which request it was.
        ctx.counters.bump(bad_checksum_count=1)
        ctx.log.warning("zk_bad_checksum_dropped", peer=link.peer, raw=raw[:256].hex())
        return None
    except p.ZkFrameError:
        ctx.server.note_garbage(link, raw)
        return None


async def _answer(
    ctx: TerminalContext, link: Link, session: Session | None, packet: p.ZkPacket
) -> Reply | None:
    """Build and send the reply; None when the link went away before it could go out.

    The session counts as busy meanwhile, so no live event slips in before the reply.
    """
    if session is not None:
        session.last_seen = time.monotonic()
        session.busy = True
    try:
        reply = dispatch(ctx, link, session, packet)
        delay = ctx.faults.params("slow_replies")
        if delay is not None:
            await asyncio.sleep(float(delay.get("delay", 2.0)))
        if link.closed or link.abandoned:
            return None
        await transmit(ctx, link, reply)
        await link.drain()
    finally:
        if session is not None:
            session.busy = False
    return reply


async def _follow_up(ctx: TerminalContext, link: Link, reply: Reply) -> None:
    """Do what the reply announced once it has gone: end the session, or reboot."""
    if reply.after == "exit":
        ctx.slot.end_session("exit")
        if isinstance(link, TcpLink):
            link.close()
        else:
            ctx.slot.release(link)
    elif reply.after == "restart":
        await restart(ctx, silent=False, downtime=ctx.terminal.restart_downtime)
