"""One READ_BUFFER chunk over TCP, framed by the ZK envelope lengths (replaces pyzk's reassembly).

A bulk read answers one READ_BUFFER with a burst: PREPARE_DATA (the byte count), CMD_DATA
packets, and a closing ACK_OK. pyzk 0.9 reassembles that burst from the sizes it asks
recv() for and loses its place (then waits forever) when a TCP segment boundary falls inside
a packet header, which depends on timing. Here every packet is cut out by its envelope
length (the codec's `TcpReassembler`), its checksum checked, and matched on its reply
number; a live event straggling in is acknowledged and skipped.

Plain socket code: the pyzk session state (reply numbers, the session id) is read and
written by the caller, `PatchedZK._read_chunk_tcp` in `pyzk_patches`.
"""

from __future__ import annotations

import socket

from zk.exception import ZKErrorResponse

from punchgate.drivers.zk import protocol as zp


def ack_event_tcp(sock: socket.socket, session_id: int, reply: int) -> None:
    """Acknowledge a real-time event over TCP (echoing its reply number), or the terminal resends it."""
    sock.sendall(zp.tcp_wrap(zp.build_packet(zp.CMD_ACK_OK, session_id, reply)))


def request_chunk(sock: socket.socket, session_id: int, reply_no: int, start: int, size: int) -> None:
    """Send READ_BUFFER for `size` bytes from `start` of the table the terminal has staged."""
    request = zp.build_packet(zp.CMD_READ_BUFFER, session_id, reply_no, zp.encode_read_buffer(start, size))
    sock.sendall(zp.tcp_wrap(request))


class _Burst:
    """The packets answering one READ_BUFFER, collected until the data is complete."""

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        self.data = bytearray()
        self.expected: int | None = None

    def take(self, packet: zp.ZkPacket) -> bytes | None:
        """Add one reply packet; the chunk's bytes once complete, else None."""
        if packet.command == zp.CMD_PREPARE_DATA:
            self.expected = zp.decode_prepare_data(packet.data)[0]
            return None
        if packet.command == zp.CMD_DATA:
            self.data += packet.data
            # Some firmware answers with one CMD_DATA and no burst.
            return bytes(self.data) if self.expected is None else None
        if packet.command == zp.CMD_ACK_OK and self.expected is not None:
            if len(self.data) != self.expected:
                raise zp.ZkFrameError(f"bulk read announced {self.expected} bytes, carried {len(self.data)}")
            return bytes(self.data)
        raise ZKErrorResponse(f"READ_BUFFER {self.start}+{self.size} answered with code {packet.command}")


def receive_chunk(sock: socket.socket, session_id: int, reply_no: int, start: int, size: int) -> bytes:
    """The data answering READ_BUFFER `reply_no`, whatever the segment boundaries.

    Raises ConnectionResetError when the terminal closes the connection, ZkFrameError for
    bytes outside any frame, a bad checksum or a short burst (the data cannot be trusted),
    and ZKErrorResponse for any other reply.
    """
    garbage: list[bytes] = []
    reassembler = zp.TcpReassembler(on_garbage=garbage.append)
    burst = _Burst(start, size)
    while True:
        received = sock.recv(max(65536, size + 64))
        if not received:
            raise ConnectionResetError("the terminal closed the connection during a bulk read")
        if garbage:
            raise zp.ZkFrameError("bytes outside any ZK frame in a bulk read", garbage[0][:64])
        for raw in reassembler.feed(received):
            packet = zp.parse_packet(raw)  # a bad checksum raises: the data cannot be trusted
            if packet.command == zp.CMD_REG_EVENT:  # a straggling live event: ack, skip
                ack_event_tcp(sock, session_id, packet.reply)
                continue
            if packet.reply != reply_no:
                continue  # a late answer to something earlier; not ours
            chunk = burst.take(packet)
            if chunk is not None:
                return chunk
