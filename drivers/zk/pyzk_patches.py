"""pyzk 0.9's `ZK` with its known bugs patched: the only module that touches pyzk's private state.

pyzk keeps its session in name-mangled attributes (`self.__sock` is `_ZK__sock`) and has no
hooks, so fixing it means overriding those private methods and reading those private
attributes. All of that is here, in `PatchedZK`, so an upgrade of pyzk is checked against
one file. Everything else in the driver uses the public accessors at the top of the class
(`sock`, `link`, `session_id`, `exchange`, `next_reply_number`, ...).

Every byte from the terminal is read through `link.Link`, bounded in time (the call's
deadline), in bytes (what the caller accepts) and by abort from the event loop; pyzk's own
receive code is no longer on any path the driver takes.

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
                             fix only: test_eof_read_spins_forever_bug_and_fix (the empty
                             read raises ConnectionResetError)
    reply_cut_at_recv_size   a reply is read with one recv of the size pyzk expects: a reply
                             that arrives in pieces (a slow terminal) is "TCP packet invalid",
                             which connect reports as "not a ZK terminal", and a longer one
                             is cut, the rest read as the next reply
                             bare: test_reply_cut_at_recv_size_bug_and_fix
                             fix only: tests/hostile/test_zk_attacks.py::test_slow_terminal_*
    event_taken_for_reply    a live event is read as the reply to the next command, and
                             the session is out of step from then on
                             bare: test_event_taken_for_reply_bug_and_fix,
                                   test_reply_cut_at_recv_size_bug_and_fix (a long event)
                             fix only: test_driver.py::test_live_ticks_when_idle_and_close_during_a_burst
    event_glued_to_reply     an event in the same recv as the reply is read as its data
                             none (depends on segment timing)
    clear_data_sends_str     clear_data() concatenates bytes and str: TypeError on Python 3
                             bare: test_clear_data_str_bug_and_fix
    bulk_read_loses_place    the READ_BUFFER burst is reassembled from recv sizes, and a
                             segment boundary inside a header hangs the read
                             none (pyzk survives the emulator's trickled bursts)
    bulk_read_unbounded      read_with_buffer believes the size a terminal announces (and an
                             envelope's length) and keeps every CMD_DATA packet that comes,
                             over UDP for as long as they come: gigabytes from one terminal
                             fix only: tests/hostile/test_zk_attacks.py (oversized, endless)
    eof_read_spins_forever   __recieve_raw_data loops on recv until it has the bytes an
                             envelope announced; once the terminal has closed the connection
                             every recv returns b"" at once, and the loop spins on one core
                             for good (its thread never ends)
                             bare: test_eof_read_spins_forever_bug_and_fix

Not patches but bypasses (pyzk's code for them is never called): attendance decoding for
8-byte (both layouts) and 49-byte records and impossible dates (`parsing`;
test_zem500_eight_byte_records, test_49_byte_records,
test_one_invalid_date_does_not_abort_the_read), live events of 10, 14 and 37 bytes (`live`;
test_live_events_of_other_lengths), SET_TIME's year % 100 (`client`) and user names in the
terminal's encoding (`parsing`).
"""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

import structlog
from zk import ZK
from zk.base import ZK_helper
from zk.exception import ZKErrorConnection, ZKErrorResponse, ZKNetworkError
from zk.user import User

from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.bulk_read import ack_event, finish_burst
from punchgate.drivers.zk.errors import AuthRefused, NotZkError, OversizedReply
from punchgate.drivers.zk.limits import (
    MAX_ATTENDANCE_RECORD,
    MAX_RECORDS,
    MAX_REPLY_BYTES,
    MAX_USER_RECORD,
    MAX_USERS,
    table_cap,
)
from punchgate.drivers.zk.link import Link

log = structlog.get_logger(__name__)

MAX_STRAY_EVENTS: Final = 64  # events skipped while waiting for one reply before giving up
_ACK_OK_STATUS: Final = frozenset({zp.CMD_ACK_OK, zp.CMD_PREPARE_DATA, zp.CMD_DATA})
# pyzk's chunk sizes for READ_BUFFER (zk.md, section 6.4).
TCP_MAX_CHUNK: Final = 0xFFC0
UDP_MAX_CHUNK: Final = 16 * 1024
# What pyzk's own callers of read_with_buffer may receive: the largest table a terminal may hold.
DataHook = Callable[[bytes, int], None]  # (a chunk of a bulk read, the whole set's size)
DEFAULT_TABLE_CAP: Final = max(
    table_cap(0, MAX_RECORDS, MAX_ATTENDANCE_RECORD), table_cap(0, MAX_USERS, MAX_USER_RECORD)
)


class PatchedZK(ZK):  # type: ignore[misc]  # pyzk has no type hints
    """pyzk 0.9's ZK with the workarounds this gateway needs. Blocking; one thread at a time.

    pyzk keeps its state in name-mangled attributes (`self.__sock` is `_ZK__sock`); the
    overrides below use those names on purpose, and only the few they need.
    """

    _ZK__sock: socket.socket
    _ZK__address: tuple[Any, ...]
    _ZK__header: tuple[int, ...]

    # What pyzk's `ZK.__init__` sets on every instance and never changes on the paths this
    # driver takes (its size counters are written by `read_sizes`, which the driver does not
    # call; its connect is replaced below): class defaults here, so a client does not carry
    # a 45-key dict of them (1.5 KB a terminal, issue 18). A write still makes the instance's
    # own attribute, and a read finds pyzk's value: the same as pyzk's initial state
    # (tests/zk_driver/test_pyzk_state.py compares the two).
    _ZK__session_id: int = 0
    _ZK__reply_id: int = zp.USHRT_MAX - 1
    _ZK__data_recv: bytes | None = None
    _ZK__data: bytes | None = None
    is_connect: bool = False
    is_enabled: bool = True
    ommit_ping: bool = True  # patch ping_before_connect (see __init__)
    verbose: bool = False
    users: int = 0
    fingers: int = 0
    records: int = 0
    dummy: int = 0
    cards: int = 0
    fingers_cap: int = 0
    users_cap: int = 0
    rec_cap: int = 0
    faces: int = 0
    faces_cap: int = 0
    fingers_av: int = 0
    users_av: int = 0
    rec_av: int = 0
    next_uid: int = 1
    next_user_id: str = "1"
    user_packet_size: int = 28  # pyzk's default (zk6); connect sets it from the transport
    end_live_capture: bool = False

    def __init__(
        self, *, host: str, port: int, udp: bool, comm_key: int, timeout: float, encoding: str
    ) -> None:
        # Patch ping_before_connect: ommit_ping=True always (a class default above). pyzk 0.9
        # otherwise shells out to `ping` and refuses to connect when ICMP is filtered or ping
        # is missing, though the terminal answers. Reproduced by
        # test_ping_before_connect_refuses_a_reachable_terminal.
        # pyzk's `ZK.__init__` is not called: what it does besides the defaults above is here.
        User.encoding = encoding  # pyzk sets its User class's encoding (process-wide) too
        self._ZK__address = (host, port)
        self._ZK__sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # pyzk's placeholder
        self._ZK__sock.settimeout(timeout)
        self._ZK__timeout = timeout
        self._ZK__password = comm_key
        self.force_udp = udp
        self.encoding = encoding
        self.tcp = not udp
        self.base_timeout = timeout
        self.comm_key = comm_key
        self.link = Link(tcp=not udp, timeout=timeout)
        self.on_chunk: Callable[[int, int], None] | None = None  # (bytes so far, total)

    @functools.cached_property
    def helper(self) -> ZK_helper:
        """pyzk's ping and TCP probe helper, made when first asked for (the patched connect
        never uses it)."""
        return ZK_helper(*self._ZK__address)

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
        """How long one recv may wait for the terminal (the call's deadline still applies)."""
        self._ZK__timeout = seconds
        self.link.timeout = seconds

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
        The socket belongs to the link before it connects, so an abort reaches it there too.
        """
        with contextlib.suppress(OSError):
            self._ZK__sock.close()  # pyzk's placeholder UDP socket from __init__, or a previous one
        host, port = self._ZK__address
        kind = socket.SOCK_DGRAM if not self.tcp else socket.SOCK_STREAM
        family, _, _, _, address = socket.getaddrinfo(host, port, type=kind)[0]
        # UDP too: a connected UDP socket hears ICMP "port unreachable" as a refusal,
        # and ignores datagrams from anyone but the terminal.
        self._ZK__sock = self.link.open(family, kind, address)
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
        """One exchange during connect, where anything not ZK means a foreign device.

        Only bytes that cannot begin a ZK reply count: a reply still arriving when the
        deadline comes is a slow terminal (TooSlow), not a foreign one.
        """
        try:
            self._ZK__send_command(command, data)
        except zp.ZkFrameError as exc:
            raise NotZkError(f"reply without the ZK TCP envelope: {exc}", exc.raw) from exc
        raw = self._last_packet()
        try:
            packet = zp.parse_packet(raw)
        except zp.ZkFrameError as exc:
            raise NotZkError(f"reply is not a ZK packet: {exc}", raw) from exc
        if packet.command not in zp.REPLY_CODES:
            raise NotZkError(f"reply code {packet.command} is not a ZK reply", raw)
        return packet

    # -- patches reply_cut_at_recv_size, closed_link_is_garbage, event_taken_for_reply,
    #    event_glued_to_reply ------------------------------------------------------------------
    def _ZK__send_command(self, command: int, command_string: bytes = b"", response_size: int = 8) -> Any:
        """pyzk's send/receive, with the reply read whole and a real-time event never taken for it.

        reply_cut_at_recv_size: pyzk reads a reply with a single recv of `response_size` + 8
        bytes. A terminal that hands a reply over in pieces (a slow one) gets "TCP packet
        invalid", which at connect reads as "not a ZK terminal"; a longer reply (or a live
        event) is cut, and its rest is read as the next reply. Here the link reads the
        packet its envelope announces (within the call's deadline: TooSlow when it keeps
        trickling), and refuses at once an envelope announcing more than
        max(response_size, MAX_REPLY_BYTES). Reproduced by test_reply_cut_at_recv_size_bug_and_fix.

        event_taken_for_reply: an event can be on its way when we unregister, or be queued
        by the terminal after it; pyzk would read it as the answer to its next command and
        stay one reply behind for the rest of the session. Events (command 500, never a
        reply) are acknowledged, logged and skipped, whatever their length; the full read
        that follows picks their punches up. Reproduced by test_event_taken_for_reply_bug_and_fix.

        closed_link_is_garbage: pyzk reports an empty recv (the terminal closed the TCP
        connection) as "TCP packet invalid"; the link raises ConnectionResetError, so it
        maps to unreachable, not to a protocol error.
        """
        if command not in (zp.CMD_CONNECT, zp.CMD_AUTH) and not self.is_connect:
            raise ZKErrorConnection("instance are not connected.")
        self.link.send(zp.build_packet(command, self.session_id, self.next_reply_number(), command_string))
        limit = max(response_size, MAX_REPLY_BYTES)
        for _ in range(MAX_STRAY_EVENTS + 1):
            raw = self.link.read_packet(limit)
            if len(raw) < zp.HEADER_SIZE:
                raise zp.ZkFrameError(f"a reply of {len(raw)} bytes is shorter than a packet header", raw)
            header = struct.unpack_from("<4H", raw)
            if header[0] != zp.CMD_REG_EVENT:
                break
            log.info("zk_stray_event_skipped", event_code=header[2], size=len(raw))
            ack_event(self.link, self.session_id, header[3])
        else:
            raise ZKNetworkError(f"more than {MAX_STRAY_EVENTS} events arrived instead of a reply")
        # A burst's packets follow PREPARE_DATA; events behind a registration are the live
        # stream's (`live` takes the bytes read past the reply).
        if self.tcp and header[0] != zp.CMD_PREPARE_DATA and command != zp.CMD_REG_EVENT:
            self._skip_glued_packets()
        self._ZK__header = header
        self._ZK__response = header[0]
        self._ZK__reply_id = header[3]
        self._ZK__data_recv = raw
        self._ZK__data = raw[zp.HEADER_SIZE :]
        self._ZK__tcp_length = len(raw)  # pyzk's name for the envelope length
        self._ZK__tcp_data_recv = zp.tcp_wrap(raw)
        return {"status": header[0] in _ACK_OK_STATUS, "code": header[0]}

    def _skip_glued_packets(self) -> None:
        """Packets that came behind the reply in the same segment (event_glued_to_reply).

        A live event queued just before we unregistered can land right behind the reply:
        it is acknowledged and skipped like any stray event. Anything else complete behind
        a reply answers nothing we asked, and is dropped. A packet still incomplete stays
        for the next read. No test reproduces it (it depends on segment timing).
        """
        while True:
            try:
                packet = self.link.buffered_packet(MAX_REPLY_BYTES)
            except (zp.ZkFrameError, OversizedReply) as exc:
                log.warning("zk_trailing_bytes_dropped", error=str(exc))
                return
            if packet is None:
                return
            header = struct.unpack_from("<4H", packet)
            if header[0] == zp.CMD_REG_EVENT:
                log.info("zk_stray_event_skipped", event_code=header[2], size=len(packet))
                ack_event(self.link, self.session_id, header[3])
            else:
                log.warning("zk_trailing_packet_dropped", raw=packet[:64].hex())

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

    # -- patches bulk_read_unbounded, bulk_read_loses_place, eof_read_spins_forever ----------
    def read_buffered(
        self, command: int, fct: int, cap: int, on_data: DataHook | None = None, *, start: int = 0
    ) -> tuple[bytes, int]:
        """A table (PREPARE_BUFFER, then READ_BUFFER chunks) from byte `start` (a tail read; 0:
        whole) and the whole table's size, never more than `cap` bytes; `on_data(chunk,
        total)` gets each checked chunk in order as it arrives (in this thread).

        bulk_read_unbounded: pyzk's read_with_buffer believes the size the terminal
        announces (2**31 bytes makes it ask for 32,768 chunks and keep them all) and keeps
        every CMD_DATA packet that comes. Here an announcement above `cap` is refused at
        once (OversizedReply), each chunk stops at what it asked for (`finish_burst`), and
        nothing beyond `cap` is ever held. Shown by tests/hostile/test_zk_attacks.py.
        """
        request = zp.encode_buffer_request(zp.BufferRequest(command, fct))
        reply = self.exchange(zp.CMD_PREPARE_BUFFER, request, cap)
        if reply.command == zp.CMD_DATA:  # small sets come at once, complete (framing)
            if len(reply.data) > cap:
                raise OversizedReply(f"a {len(reply.data)}-byte data set; at most {cap} are accepted")
            self._progress(len(reply.data), len(reply.data), reply.data, on_data)
            return reply.data[start:], len(reply.data)
        if reply.command != zp.CMD_ACK_OK:
            raise ZKErrorResponse(f"buffered read refused (reply {reply.command})")
        total = zp.decode_buffer_ready(reply.data)
        if total > cap:
            raise OversizedReply(
                f"the terminal announced a {total}-byte data set; at most {cap} are accepted"
            )
        chunk_size = TCP_MAX_CHUNK if self.tcp else UDP_MAX_CHUNK
        buffer = bytearray()
        for at in range(start, total, chunk_size):
            size = min(chunk_size, total - at)
            chunk = self._ZK__read_chunk(at, size)
            if len(chunk) != size:  # the rest would be misplaced: the set cannot be trusted
                raise zp.ZkFrameError(f"READ_BUFFER {at}+{size} carried {len(chunk)} bytes")
            buffer += chunk
            self._progress(len(buffer), total, chunk, on_data)
        self.free_data()
        return bytes(buffer), total

    def read_with_buffer(self, command: int, fct: int = 0, ext: int = 0) -> tuple[bytes, int]:
        """pyzk's entry point for buffered reads, bounded (for pyzk's own callers)."""
        data = self.read_buffered(command, fct, DEFAULT_TABLE_CAP)[0]
        return data, len(data)

    def _progress(self, done: int, total: int, chunk: bytes, on_data: DataHook | None) -> None:
        if self.on_chunk is not None:
            self.on_chunk(done, max(total, done))
        if on_data is not None:  # a caller can decode and store a table while the rest still comes
            on_data(chunk, total)

    def _ZK__read_chunk(self, start: int, size: int) -> bytes:
        """One READ_BUFFER chunk of `size` bytes: the burst framed by envelopes, bounded by `size`.

        bulk_read_loses_place: pyzk reassembles a TCP burst from the sizes it asked recv()
        for and loses its place (then waits forever) when a segment boundary falls inside a
        packet header; here every packet is cut out by its envelope (`link`), checked and
        matched on its reply number (`bulk_read`). No test reproduces it (it depends on
        segment timing; pyzk survives the emulator's trickled bursts).
        """
        self._ZK__send_command(zp.CMD_READ_BUFFER, zp.encode_read_buffer(start, size), size)
        return self._ZK__recieve_chunk(size)

    def _ZK__recieve_chunk(self, limit: int = DEFAULT_TABLE_CAP) -> bytes:
        """The rest of a bulk transfer whose first packet __send_command has just read."""
        header = self._ZK__header
        first = zp.ZkPacket(header[0], header[2], header[3], bytes(self._ZK__data or b""), header[1])
        return finish_burst(self.link, self.session_id, first, limit)

    def _ZK__recieve_raw_data(self, size: int) -> bytes:
        """`size` more bytes of the stream, read through the link (pyzk's callers only).

        eof_read_spins_forever: pyzk loops on recv until it has `size` bytes, `size` taken
        from the envelope; after the terminal closes the connection every recv returns b""
        at once, and the loop spins on one core for good, its thread never finishing. The
        link raises on an empty read and obeys the call's deadline. Reproduced by
        test_eof_read_spins_forever_bug_and_fix.
        """
        if size > DEFAULT_TABLE_CAP:
            raise OversizedReply(f"{size} more bytes announced; at most {DEFAULT_TABLE_CAP} are accepted")
        return self.link.read_bytes(size)
