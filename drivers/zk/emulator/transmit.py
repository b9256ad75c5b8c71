"""Putting a reply on the wire: reply-damaging faults, and paced bulk transfers over TCP.

Faults that spoil replies (garbage, truncated, a transfer dropped midway) act here, on
the finished `Reply`, so handlers never know about them. Bulk transfers over TCP are
trickled out the way a terminal's CPU sends them (see `send_paced`).
"""

from __future__ import annotations

import asyncio
import struct

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.context import TerminalContext
from punchgate.drivers.zk.emulator.links import Link, TcpLink
from punchgate.drivers.zk.emulator.replies import Reply

_CMD_DATA_LE = struct.pack("<H", p.CMD_DATA)


async def transmit(ctx: TerminalContext, link: Link, reply: Reply) -> None:
    """Send `reply` over `link`, as the active faults allow."""
    packets = reply.packets
    drop = ctx.faults.params("drop_mid_transfer") if reply.bulk else None
    if drop is not None:
        keep = 1 + int(drop.get("after_packets", 2))  # PREPARE_DATA + N data packets
        packets = packets[:keep]
    units = link.wire_units(packets)
    damaged = _damaged_units(ctx, link, units)
    if damaged is not None:
        link.send_units(damaged)
    elif reply.bulk and isinstance(link, TcpLink):
        await send_paced(ctx, link, packets)
    else:
        link.send_units(units)
    if drop is not None:
        ctx.log.warning("zk_transfer_dropped", peer=link.peer, data_packets_sent=len(packets) - 1)
        await link.drain()
        if isinstance(link, TcpLink):
            link.close()
        else:
            ctx.slot.release(link)


def _damaged_units(ctx: TerminalContext, link: Link, units: list[bytes]) -> list[bytes] | None:
    """What to send instead of the reply's `units` when a fault spoils it (else None)."""
    if ctx.faults.use_counted("garbage_replies"):
        garbage = [ctx.rng.randbytes(len(units[0]))]
        ctx.log.warning("zk_sent_garbage", peer=link.peer, raw=garbage[0][:64].hex())
        return garbage
    if ctx.faults.use_counted("truncated_replies"):
        truncated = [units[0][: max(1, len(units[0]) // 2)]]
        ctx.log.warning("zk_sent_truncated", peer=link.peer, raw=truncated[0][:64].hex())
        return truncated
    return None


async def send_paced(ctx: TerminalContext, link: TcpLink, packets: list[bytes]) -> None:
    """Trickle a bulk transfer out the way a terminal's CPU does: every packet in two
    writes (its 16-byte framed header, then its data), with a short pause between writes.

    Clients depend on that pacing. pyzk, for one, issues one recv() per CMD_DATA packet
    and blocks for good when the whole burst already sits in its buffer. Split writes
    keep it from running ahead: whenever it holds only a packet's header it reads
    exactly the rest, which re-synchronises it with the stream. PREPARE_DATA and the
    closing ACK_OK go out whole: clients parse them from a single read.
    """
    head = p.TCP_ENVELOPE_SIZE + p.HEADER_SIZE
    last_data = len(packets) - 2
    pieces: list[bytes] = []
    for index, packet in enumerate(packets):
        framed = p.tcp_wrap(packet)
        if packet[:2] != _CMD_DATA_LE or len(framed) <= head:
            pieces.append(framed)
            continue
        pieces.append(framed[:head])
        # The last packet's data goes in several pieces: a client that did run ahead
        # (a stall on a busy host) catches up on them before the stream ends.
        step = len(framed) if index != last_data else 256
        pieces += [framed[i : i + step] for i in range(head, len(framed), step)]
    for index, piece in enumerate(pieces):
        if index:
            await asyncio.sleep(ctx.terminal.tcp_packet_interval)
            gate = ctx.terminal.paced_gate
            if gate is not None:
                await gate(link.fileno())
        if link.closed or link.abandoned:
            return
        link.send_units([piece])
