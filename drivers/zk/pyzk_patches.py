"""pyzk 0.9's `ZK` with its known bugs patched: the only module that touches pyzk's private state.

pyzk keeps its session in name-mangled attributes (`self.__sock` is `_ZK__sock`) and has no
hooks, so fixing it means overriding those private methods and reading those private
attributes. All of that is here, in `PatchedZK`, so an upgrade of pyzk is checked against
one file. Everything else in the driver uses the public accessors at the top of the class
(`sock`, `session_id`, `exchange`, `next_reply_number`, ...).

Each patch is named after the upstream pyzk 0.9 bug it works around, and says which test
shows it. "bare" tests are in tests/zk_driver/test_pyzk_bugs.py and reproduce the bug with
bare pyzk, then show the fix; "fix only" tests exercise just the fix (they fail when the
patch is undone); "none" means no test fails when the patch is undone:

    ping_before_connect      connect() shells out to `ping` and refuses a terminal that
                             answers when ICMP is filtered or ping is missing
                             bare: test_ping_before_connect_refuses_a_reachable_terminal
    throwaway_tcp_probe      connect() opens and drops a spare TCP connection first
                             none
    connect_ex_ignored       the socket is opened with connect_ex, its result ignored, and
                             UDP is left unconnected: a closed port looks like silence
                             bare: test_connect_ex_ignored_makes_a_closed_port_look_silent
                             fix only: test_driver.py::test_unreachable_port_fails_fast
    connect_reply_unchecked  any bytes are taken for a ZK header at connect; a refused
                             comm key is a bare "Unauthenticated"
                             fix only: test_driver.py::test_something_else_on_the_port_is_unsupported,
                                       test_driver.py::test_comm_key_right_and_wrong
    closed_link_is_garbage   an empty recv (the terminal closed TCP) is "TCP packet invalid"
                             none
    event_taken_for_reply    a live event is read as the reply to the next command, and
                             the session is out of step from then on
                             bare: test_event_taken_for_reply_bug_and_fix
                             fix only: test_driver.py::test_live_ticks_when_idle_and_close_during_a_burst
    event_glued_to_reply     an event in the same recv as the reply is read as its data
                             none (depends on segment timing)
    clear_data_sends_str     clear_data() concatenates bytes and str: TypeError on Python 3
                             bare: test_clear_data_str_bug_and_fix
    bulk_read_loses_place    the READ_BUFFER burst is reassembled from recv sizes, and a
                             segment boundary inside a header hangs the read
                             none (pyzk survives the emulator's trickled bursts)

Not patches but bypasses (pyzk's code for them is never called): attendance decoding for
8-byte (both layouts) and 49-byte records and impossible dates (`parsing`;
test_zem500_eight_byte_records, test_49_byte_records,
test_one_invalid_date_does_not_abort_the_read), live events of 10, 14 and 37 bytes (`live`;
test_live_events_of_other_lengths), SET_TIME's year % 100 (`client`) and user names in the
terminal's encoding (`parsing`).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

import structlog
from zk import ZK
from zk.exception import ZKErrorResponse, ZKNetworkError

from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.bulk_read import ack_event_tcp, receive_chunk, request_chunk
from punchgate.drivers.zk.errors import AuthRefused, NotZkError

log = structlog.get_logger(__name__)

MAX_STRAY_EVENTS: Final = 64  # events skipped while waiting for one reply before giving up
_NOT_RECEIVED: Final = b"(nothing received yet)"
_ACK_OK_STATUS: Final = frozenset({zp.CMD_ACK_OK, zp.CMD_PREPARE_DATA, zp.CMD_DATA})


class PatchedZK(ZK):  # type: ignore[misc]  # pyzk has no type hints
    """pyzk 0.9's ZK with the workarounds this gateway needs. Blocking; one thread at a time.

    pyzk keeps its state in name-mangled attributes (`self.__sock` is `_ZK__sock`); the
    overrides below use those names on purpose, and only the few they need.
    """

    _ZK__sock: socket.socket
    _ZK__address: tuple[Any, ...]
    _ZK__header: tuple[int, ...]
    _ZK__tcp_data_recv: bytes
    _ZK__tcp_length: int

    def __init__(
        self, *, host: str, port: int, udp: bool, comm_key: int, timeout: float, encoding: str
    ) -> None:
        # Patch ping_before_connect: ommit_ping=True always. pyzk 0.9 otherwise shells out
        # to `ping` and refuses to connect when ICMP is filtered or ping is missing, though
        # the terminal answers. Reproduced by test_ping_before_connect_refuses_a_reachable_terminal.
        super().__init__(
            host,
            port=port,
            timeout=timeout,
            password=comm_key,
            force_udp=udp,
            ommit_ping=True,
            encoding=encoding,
        )
        self.base_timeout = timeout
        self.comm_key = comm_key
        self.on_chunk: Callable[[int, int], None] | None = None  # (bytes so far, total)
        self._buffer_total = 0
        self._buffer_done = 0

    # -- accessors: pyzk's session state, for the rest of the driver ------------------------
    @property
    def sock(self) -> socket.socket:
        return self._ZK__sock

    @property
    def session_id(self) -> int:
        return int(self._ZK__session_id)

    def next_reply_number(self) -> int:
        """The reply number pyzk would put on its next request (for our own asyncio sends)."""
        reply = int(self._ZK__reply_id) + 1
        return reply - zp.USHRT_MAX if reply >= zp.USHRT_MAX else reply

    def set_reply_number(self, reply: int) -> None:
        self._ZK__reply_id = reply

    def set_timeout(self, seconds: float) -> None:
        self._ZK__timeout = seconds
        self.sock.settimeout(seconds)

    def exchange(self, command: int, data: bytes = b"", response_size: int = 1024) -> zp.ZkPacket:
        """Send one command and return the terminal's reply packet (any reply code)."""
        self._ZK__send_command(command, data, response_size)
        header = self._ZK__header
        return zp.ZkPacket(header[0], header[2], header[3], bytes(self._ZK__data or b""), header[1])

    def _last_packet(self) -> bytes:
        return bytes(self._ZK__data_recv or b"")

    # -- patch connect_ex_ignored -----------------------------------------------------------
    def _ZK__create_socket(self) -> None:
        """Open the real socket and let failures raise (pyzk uses connect_ex and ignores it).

        pyzk 0.9 leaves the UDP socket unconnected and ignores connect_ex's result, so a
        closed port shows up later as a confusing send error (TCP) or a full timeout of
        silence (UDP). Reproduced by test_connect_ex_ignored_makes_a_closed_port_look_silent.
        """
        with contextlib.suppress(OSError):
            self._ZK__sock.close()  # the placeholder UDP socket pyzk made in __init__
        host, port = self._ZK__address
        kind = socket.SOCK_DGRAM if not self.tcp else socket.SOCK_STREAM
        family, _, _, _, address = socket.getaddrinfo(host, port, type=kind)[0]
        sock = socket.socket(family, kind)
        sock.settimeout(self.base_timeout)
        try:
            # UDP too: a connected UDP socket hears ICMP "port unreachable" as a refusal,
            # and ignores datagrams from anyone but the terminal.
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        self._ZK__sock = sock
        self._ZK__address = address[:2]

    # -- patches ping_before_connect, throwaway_tcp_probe, connect_reply_unchecked ----------
    def connect(self) -> PatchedZK:
        """CONNECT (and AUTH with the comm key); raises NotZkError / AuthRefused / OSError.

        Besides never pinging (ping_before_connect), this skips pyzk's throwaway TCP
        connection (`helper.test_tcp`, throwaway_tcp_probe: the user record size follows
        from the transport; no test), and checks every reply (connect_reply_unchecked: pyzk
        takes any bytes for a ZK header and reports a refused comm key as a bare
        "Unauthenticated"; no bare-pyzk reproduction, the checks are tested by
        test_driver.py::test_something_else_on_the_port_is_unsupported and
        ::test_comm_key_right_and_wrong).
        """
        self.end_live_capture = False
        self.user_packet_size = 72 if self.tcp else 28
        self._ZK__create_socket()  # no ping, no throwaway probe connection
        self._ZK__session_id = 0
        self._ZK__reply_id = zp.USHRT_MAX - 1
        reply = self._checked_reply(zp.CMD_CONNECT)
        self._ZK__session_id = reply.session
        if reply.command == zp.CMD_ACK_UNAUTH:
            if not self.comm_key:
                raise AuthRefused("the terminal requires a comm key and none is configured")
            reply = self._checked_reply(zp.CMD_AUTH, zp.comm_key_hash(self.comm_key, reply.session))
            if reply.command == zp.CMD_ACK_UNAUTH:
                raise AuthRefused("the terminal refused the comm key")
        if reply.command != zp.CMD_ACK_OK:
            raise NotZkError(f"CONNECT answered with code {reply.command}", self._last_packet())
        self.is_connect = True
        return self

    def _checked_reply(self, command: int, data: bytes = b"") -> zp.ZkPacket:
        """One exchange during connect, where anything not ZK means a foreign device."""
        try:
            self._ZK__send_command(command, data)
        except ZKNetworkError as exc:
            if "TCP packet invalid" in str(exc):
                raise NotZkError("reply without the ZK TCP envelope", self._ZK__tcp_data_recv) from exc
            raise
        raw = self._last_packet()
        try:
            packet = zp.parse_packet(raw)
        except zp.ZkFrameError as exc:
            raise NotZkError(f"reply is not a ZK packet: {exc}", raw) from exc
        if packet.command not in zp.REPLY_CODES:
            raise NotZkError(f"reply code {packet.command} is not a ZK reply", raw)
        return packet

    # -- patches closed_link_is_garbage, event_taken_for_reply, event_glued_to_reply ---------
    def _ZK__send_command(self, command: int, command_string: bytes = b"", response_size: int = 8) -> Any:
        """pyzk's send/receive, but a real-time event is never taken for the reply.

        event_taken_for_reply: an event can be on its way when we unregister, or be queued
        by the terminal after it; pyzk would read it as the answer to its next command and
        stay one reply behind for the rest of the session. Events (command 500, never a
        reply) are acknowledged, logged and skipped; the full read that follows picks their
        punches up. Reproduced by test_event_taken_for_reply_bug_and_fix. Over TCP the
        event must fit in the recv pyzk makes (response_size + 8 bytes); a longer event met
        by a command with a small response_size still desynchronises the session.

        closed_link_is_garbage: pyzk reports an empty recv (the terminal closed the TCP
        connection) as "TCP packet invalid"; it is raised here as ConnectionResetError, so
        it maps to unreachable, not to a protocol error. No test reproduces it.
        """
        self._ZK__tcp_data_recv = _NOT_RECEIVED  # tells "the recv got nothing" apart from a failed send
        try:
            result = ZK._ZK__send_command(self, command, command_string, response_size)
        except ZKNetworkError as exc:
            if self.tcp and self._ZK__tcp_data_recv == b"":
                # pyzk calls an empty recv "TCP packet invalid"; it is the terminal closing the
                # connection (a reboot, a dropped session), which is unreachable, not garbage.
                raise ConnectionResetError("the terminal closed the connection") from exc
            raise
        for _ in range(MAX_STRAY_EVENTS):
            if self._ZK__header[0] != zp.CMD_REG_EVENT:
                if self.tcp:
                    self._trim_to_envelope()
                return result
            result = self._skip_stray_event(response_size)
        raise ZKNetworkError(f"more than {MAX_STRAY_EVENTS} events arrived instead of a reply")

    def _trim_to_envelope(self) -> None:
        """Keep only the reply's own bytes when more arrived in the same recv (event_glued_to_reply).

        pyzk takes everything one recv returned as the reply's data. A live event queued just
        before we unregistered can land right behind the reply in the same segment, and
        would then be read as part of (say) a small attendance set. The envelope says where
        the reply ends; a trailing event is acknowledged and skipped like any stray event.
        No test reproduces it (it depends on segment timing).
        """
        received = bytes(self._ZK__tcp_data_recv or b"")
        end = 8 + int(self._ZK__tcp_length or 0)
        if self._ZK__tcp_length <= 0 or len(received) <= end:
            return
        self._ZK__data_recv = received[8:end]
        self._ZK__data = received[16:end]
        for raw in zp.TcpReassembler().feed(received[end:]):
            try:
                packet = zp.parse_packet(raw)
            except zp.ZkFrameError:
                log.warning("zk_trailing_bytes_dropped", raw=raw[:64].hex())
                continue
            if packet.command == zp.CMD_REG_EVENT:
                log.info("zk_stray_event_skipped", event_code=packet.session)
                ack_event_tcp(self.sock, self.session_id, packet.reply)

    def _skip_stray_event(self, response_size: int) -> Any:
        """Acknowledge the event pyzk just received and read the real reply in its place."""
        header = self._ZK__header
        log.info("zk_stray_event_skipped", event_code=header[2])
        ack = zp.build_packet(zp.CMD_ACK_OK, self.session_id, header[3])
        try:
            if self.tcp:
                received = bytes(self._ZK__tcp_data_recv)
                # The reply may have come in the same recv, right behind the event.
                rest = received[8 + self._ZK__tcp_length :]
                self.sock.sendall(zp.tcp_wrap(ack))
                frame = rest or self.sock.recv(response_size + 8)
                self._ZK__tcp_data_recv = frame
                self._ZK__tcp_length = self._ZK__test_tcp_top(frame)
                if self._ZK__tcp_length == 0:
                    raise ZKNetworkError("TCP packet invalid")
                packet = frame[8:]
            else:
                self.sock.sendall(ack)
                packet = self.sock.recv(response_size)
            self._ZK__header = struct.unpack("<4H", packet[:8])
        except ZKNetworkError:
            raise
        except Exception as exc:
            raise ZKNetworkError(str(exc)) from exc
        self._ZK__data_recv = packet
        self._ZK__response = self._ZK__header[0]
        self._ZK__reply_id = self._ZK__header[3]
        self._ZK__data = packet[8:]
        return {"status": self._ZK__response in _ACK_OK_STATUS, "code": self._ZK__response}

    # -- patch clear_data_sends_str ---------------------------------------------------------
    def clear_data(self) -> bool:
        """CLEAR_DATA with bytes (pyzk 0.9 concatenates a str and raises TypeError).

        Reproduced by test_clear_data_str_bug_and_fix. The driver itself never sends
        CLEAR_DATA (it would erase users too); the override keeps the client safe to use.
        """
        reply = self.exchange(zp.CMD_CLEAR_DATA, b"", 8)
        if reply.command != zp.CMD_ACK_OK:
            raise ZKErrorResponse(f"can't clear data (reply {reply.command})")
        self.next_uid = 1
        return True

    # -- patch bulk_read_loses_place (and progress reporting) -------------------------------
    def _ZK__read_chunk(self, start: int, size: int) -> bytes:
        """One READ_BUFFER chunk: framed by envelope lengths over TCP, with progress reported.

        bulk_read_loses_place: see `bulk_read`. No test reproduces it (it depends on
        segment timing; pyzk survives the emulator's trickled bursts, so the tests pass with
        pyzk's own chunk reader too). The progress total is only known here, from the
        PREPARE_BUFFER reply pyzk has just parsed into its private `__data`.
        """
        if start == 0:
            # read_with_buffer has just parsed the PREPARE_BUFFER reply, still in __data:
            # 00, u32 size. It is the only place the total is known.
            data = bytes(self._ZK__data or b"")
            self._buffer_total = zp.decode_buffer_ready(data) if len(data) >= 5 else 0
            self._buffer_done = 0
        chunk: bytes = (
            self._read_chunk_tcp(start, size) if self.tcp else ZK._ZK__read_chunk(self, start, size)
        )
        self._buffer_done += len(chunk)
        if self.on_chunk is not None:
            self.on_chunk(self._buffer_done, max(self._buffer_total, self._buffer_done))
        return chunk

    def _read_chunk_tcp(self, start: int, size: int) -> bytes:
        """READ_BUFFER over TCP, framed by the envelope lengths whatever the segment boundaries."""
        reply_no = self.next_reply_number()
        request_chunk(self.sock, self.session_id, reply_no, start, size)
        self.set_reply_number(reply_no)
        return receive_chunk(self.sock, self.session_id, reply_no, start, size)
