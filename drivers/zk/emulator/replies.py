"""What a command handler returns: the packets of one reply and what happens after it.

A `Reply` is built before anything is sent, so faults can cut or replace it on the way
out (`transmit`) and the request cycle can act on `after` (end the session, reboot) once
it has gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from punchgate.drivers.zk import protocol as p

AfterReply = Literal["exit", "restart"]


@dataclass
class Reply:
    """The packets answering one request; `bulk` marks a PREPARE_DATA/CMD_DATA transfer."""

    packets: list[bytes]
    bulk: bool = False
    after: AfterReply | None = None


def ack(session_id: int, packet: p.ZkPacket, data: bytes = b"", code: int = p.CMD_ACK_OK) -> Reply:
    """A one-packet reply with the request's reply number."""
    return Reply([p.build_packet(code, session_id, packet.reply, data)])


def bulk_reply(session_id: int, packet: p.ZkPacket, payload: bytes, chunk: int) -> Reply:
    """PREPARE_DATA, then CMD_DATA chunks (session field = chunk index), then ACK_OK
    (session field = index of the last chunk), all with the request's reply number."""
    reply = packet.reply
    packets = [
        p.build_packet(p.CMD_PREPARE_DATA, session_id, reply, p.encode_prepare_data(len(payload), chunk))
    ]
    index = 0
    for index, start in enumerate(range(0, len(payload), chunk)):
        packets.append(p.build_packet(p.CMD_DATA, index, reply, payload[start : start + chunk]))
    packets.append(p.build_packet(p.CMD_ACK_OK, index, reply))
    return Reply(packets, bulk=True)
