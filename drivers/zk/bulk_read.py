"""The rest of a bulk transfer (PREPARE_DATA, CMD_DATA..., ACK_OK), bounded by what was asked.

A bulk read answers one request (READ_BUFFER, or a table command sent directly) either with
one CMD_DATA holding everything or with a burst: PREPARE_DATA announcing the byte count,
CMD_DATA packets, and a closing ACK_OK. pyzk 0.9 reassembles that burst from the sizes it
asks recv() for (over TCP it loses its place when a segment boundary falls inside a packet
header, then waits forever), appends CMD_DATA packets for as long as a terminal sends them
(over UDP with no limit at all), and loops forever on an empty read once the terminal has
closed the connection.

Here every packet comes from `Link.read_packet` (cut out by its envelope, bounded in time),
its checksum is checked, and it is matched on its reply number. The announced count may not
exceed what was asked (`OversizedReply`, refused before any data is read), the data may not
exceed the announced count, and everything received while waiting for the burst's end
(stragglers, live events, late answers) counts against an allowance twice the announced
count (`EndlessData`): a terminal that keeps sending cannot make the driver keep anything.

Plain socket code: pyzk's session state is read and written by the caller (`pyzk_patches`).
"""

from __future__ import annotations

from typing import Final

from zk.exception import ZKErrorResponse

from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.errors import EndlessData, OversizedReply
from punchgate.drivers.zk.link import Link

# Bytes allowed besides a burst's own data while waiting for its end: envelopes, headers,
# a few live events, a late answer or two.
BURST_SLACK: Final = 64 * 1024
# No packet of a burst is longer than what was asked, but a short chunk still meets
# full-size stragglers and live events.
MIN_PACKET_LIMIT: Final = 2048


def ack_event(link: Link, session_id: int, reply: int) -> None:
    """Acknowledge a real-time event (echoing its reply number), or the terminal resends it."""
    link.send(zp.build_packet(zp.CMD_ACK_OK, session_id, reply))


def finish_burst(link: Link, session_id: int, first: zp.ZkPacket, limit: int) -> bytes:
    """The data of a bulk transfer whose first packet, `first`, has been read.

    `limit` is the most data bytes the caller asked for (or accepts). Raises OversizedReply
    or EndlessData when the terminal breaks that bound, ZkFrameError for a bad checksum or a
    short transfer (the data cannot be trusted), ZKErrorResponse for any other answer.
    """
    if first.command == zp.CMD_DATA:  # the whole set in one packet (framing made it complete)
        if len(first.data) > limit:
            raise OversizedReply(
                f"a {len(first.data)}-byte data packet; at most {limit} bytes were asked for"
            )
        return first.data
    if first.command != zp.CMD_PREPARE_DATA:
        raise ZKErrorResponse(f"bulk read answered with code {first.command}")
    total = zp.decode_prepare_data(first.data)[0]
    if total > limit:
        raise OversizedReply(f"the terminal announced {total} bytes; at most {limit} were asked for")
    data = bytearray()
    allowance = 2 * total + BURST_SLACK
    received = 0
    while True:
        raw = link.read_packet(max(total, MIN_PACKET_LIMIT))
        received += len(raw)
        if received > allowance:
            raise EndlessData(
                f"{received} bytes arrived for a transfer announced as {total} bytes, and still no end"
            )
        packet = zp.parse_packet(raw)  # a bad checksum raises: the data cannot be trusted
        if packet.command == zp.CMD_REG_EVENT:  # a straggling live event: ack, skip
            ack_event(link, session_id, packet.reply)
            continue
        if packet.reply != first.reply:
            continue  # a late answer to something earlier; not ours
        if packet.command == zp.CMD_DATA:
            data += packet.data
            if len(data) > total:
                raise EndlessData(f"the terminal sent more than the {total} bytes it announced")
        elif packet.command == zp.CMD_ACK_OK:
            if len(data) != total:
                raise zp.ZkFrameError(f"bulk read announced {total} bytes, carried {len(data)}")
            return bytes(data)
        else:
            raise ZKErrorResponse(f"bulk transfer interrupted by code {packet.command}")
