"""The ZK terminal driver: pyzk 0.9 in a bounded thread pool, with its known bugs worked around.

Layers, from the wire up:

* `PatchedZK` subclasses pyzk's `ZK` and keeps pyzk's framing, session and bulk-transfer
  code, but replaces what pyzk 0.9 gets wrong (zk.md, "known bugs"):
    - connect never pings (`ommit_ping=True` always) and skips pyzk's throwaway probe TCP
      connection; the real socket is opened with errors raised (pyzk uses `connect_ex` and
      ignores the result), and the UDP socket is connected so a closed port fails at once;
    - `clear_data` sends bytes (pyzk 0.9 sends a str and dies with TypeError on Python 3);
    - attendance and users are decoded by `drivers.zk.protocol` for every record size
      (8 in both byte orders, 16, 40, 49) instead of pyzk's fixed steps;
    - an impossible date in one record no longer aborts the whole read.
* `ZkDriver` implements `drivers.base.Driver` on top: every blocking pyzk call runs in one
  module-wide bounded pool, errors become the DriverError hierarchy, the live stream is read
  by asyncio directly (no pool thread is held while a terminal is quiet).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import socket
import struct
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog
from zk import ZK
from zk.exception import ZKErrorConnection, ZKErrorResponse, ZKNetworkError

from punchgate.drivers.base import (
    AuthError,
    DeviceInfo,
    DriverError,
    DriverTimeoutError,
    ProtocolError,
    RawPunch,
    UnreachableError,
    UnsupportedDeviceError,
)
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.config import ZkTerminal

log = structlog.get_logger(__name__)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------
# The shared thread pool
# ---------------------------------------------------------------------------------------

DEFAULT_POOL_SIZE: Final = 32
_pool: ThreadPoolExecutor | None = None
_pool_size = DEFAULT_POOL_SIZE
_pool_guard = threading.Lock()


def configure_pool(max_workers: int) -> None:
    """Set the size of the pool every ZK driver shares (call before the first connect)."""
    global _pool, _pool_size
    if max_workers < 1:
        raise ValueError("the ZK thread pool needs at least one worker")
    with _pool_guard:
        old, _pool, _pool_size = _pool, None, max_workers
    if old is not None:
        old.shutdown(wait=False)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_guard:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="zk")
        return _pool


# ---------------------------------------------------------------------------------------
# Timeouts and constants
# ---------------------------------------------------------------------------------------

# A terminal needs time to stage a big log before it answers, and pyzk waits per recv, so
# the socket timeout during a bulk read grows with the log: +1 s per 2,000 records.
READ_SECONDS_PER_RECORD: Final = 0.0005
# The whole bulk read must also finish within a deadline that grows with the log.
DEADLINE_SECONDS_PER_RECORD: Final = 0.002
LIVE_TICK_SECONDS: Final = 1.0
MAX_STRAY_EVENTS: Final = 64  # events skipped while waiting for one reply before giving up
# A packed time that is not a date (31 February, month 13) becomes this epoch plus the raw
# value in seconds: always before 2000 (at most 1936-02-07), so normalisation flags it
# clock_invalid; distinct raw values stay distinct (stable, unique record ids); the raw
# bytes travel with the punch.
INVALID_TIME_EPOCH: Final = dt.datetime(1800, 1, 1)
_NOT_RECEIVED: Final = b"(nothing received yet)"
_ACK_OK_STATUS: Final = frozenset({zp.CMD_ACK_OK, zp.CMD_PREPARE_DATA, zp.CMD_DATA})


def invalid_time_sentinel(time_raw: int) -> dt.datetime:
    """The stand-in timestamp for a record whose packed time is not a real date."""
    return INVALID_TIME_EPOCH + dt.timedelta(seconds=time_raw)


# ---------------------------------------------------------------------------------------
# Errors specific to this driver
# ---------------------------------------------------------------------------------------


class CountMismatchError(ProtocolError):
    """A read whose parsed records differ from the count the terminal reports.

    The pass failed; `records` holds what was parsed, for diagnostics only (the probe shows
    it). Nothing in it is trusted for storing or clearing.
    """

    def __init__(self, message: str, *, device: str, reported: int, records: list[RawPunch]) -> None:
        super().__init__(message, device=device)
        self.reported = reported
        self.records = records


class ClearRefusedError(DriverError):
    """clear_records refused: the terminal's count is not what the caller stored.

    Punches arrived (or vanished) since the read; clearing now would lose some. The next
    full read picks them up and the following clear can go ahead.
    """

    fault = DeviceFault.PROTOCOL_ERROR


# ---------------------------------------------------------------------------------------
# Pure parsing (unit-tested without sockets)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttendanceParse:
    """The outcome of decoding one attendance data set."""

    records: list[zp.AttendanceRecord]
    record_size: int | None
    problems: tuple[str, ...]  # empty when the set adds up to the reported count


def _plausible(record: zp.AttendanceRecord) -> int:
    return int(record.timestamp is not None) + int(0 <= record.state <= 5)


def detect_eight_byte_variant(body: bytes, sample: int = 200) -> zp.EightByteVariant:
    """Which 8-byte layout a log uses: the one whose records look like real punches.

    The two layouts put the time at different offsets, so the wrong one yields impossible
    dates and state codes far above 5. Ties go to pyzk's layout (the commoner one).
    """
    scores: dict[zp.EightByteVariant, int] = {"pyzk": 0, "zem500": 0}
    for offset in range(0, min(len(body) // 8, sample) * 8, 8):
        chunk = body[offset : offset + 8]
        for variant in scores:
            scores[variant] += _plausible(zp.decode_attendance(chunk, 8, eight_byte_variant=variant))
    return "zem500" if scores["zem500"] > scores["pyzk"] else "pyzk"


def _pick_record_size(body_len: int, reported: int, hint: int | None) -> int | None:
    sizes = zp.ATTENDANCE_RECORD_SIZES
    if body_len == 0:
        return hint
    if reported > 0 and body_len % reported == 0 and body_len // reported in sizes:
        return body_len // reported
    # The set does not add up: find the layout that explains the most of it, so the
    # diagnostics can say what was there. Whole multiples first, the known size first.
    dividing = [s for s in sizes if body_len % s == 0]
    if hint in dividing:
        return hint
    candidates = dividing or ([hint] if hint else list(sizes))
    return min(candidates, key=lambda s: (body_len // s > max(reported, 1), abs(body_len // s - reported)))


def parse_attendance(data: bytes, reported: int, *, size_hint: int | None = None) -> AttendanceParse:
    """Decode an attendance data set (u32 byte count + records) against the reported count.

    Never raises for bad content: whatever whole records are there are decoded, and every
    reason the set does not match `reported` is listed in `problems`.
    """
    problems: list[str] = []
    if len(data) < 4:
        problems.append(f"data set of {len(data)} bytes has no byte count")
        return AttendanceParse([], None, tuple(problems))
    (declared,) = struct.unpack_from("<I", data)
    body = bytes(data[4:])
    if declared != len(body):
        problems.append(f"data set declares {declared} bytes but carries {len(body)}")
        body = body[:declared]
    size = _pick_record_size(len(body), reported, size_hint)
    if size is None:
        if reported:
            problems.append(f"terminal reports {reported} records, the data set holds none")
        return AttendanceParse([], None, tuple(problems))
    whole = len(body) - len(body) % size
    if whole != len(body):
        problems.append(f"{len(body) - whole} trailing bytes after {whole // size} records of {size} bytes")
    variant = detect_eight_byte_variant(body[:whole]) if size == 8 else "pyzk"
    records = [
        zp.decode_attendance(body[i : i + size], size, eight_byte_variant=variant)
        for i in range(0, whole, size)
    ]
    if len(records) != reported:
        problems.append(f"terminal reports {reported} records, the data set holds {len(records)}")
    return AttendanceParse(records, size, tuple(problems))


def raw_punch_from_record(record: zp.AttendanceRecord) -> RawPunch:
    """A RawPunch for one decoded record (impossible dates get the documented sentinel)."""
    when = record.timestamp if record.timestamp is not None else invalid_time_sentinel(record.time_raw)
    return RawPunch(
        user_id=record.user_id,
        timestamp=when,
        state=record.state,
        verify=record.verify,
        work_code=record.work_code,
        raw=record.raw,
    )


def _name_slice(record_size: int) -> slice:
    # 72-byte: uid u16, privilege u8, password 8, name 24. 28-byte: uid, privilege, password 5, name 8.
    return slice(11, 35) if record_size == 72 else slice(8, 16)


def parse_users(data: bytes, reported: int, encoding: str) -> list[zp.UserRecord]:
    """Decode a user data set; names (and TFT user ids) in the terminal's own encoding.

    The codec decodes text as UTF-8; GBK or CP1251 names need the terminal's encoding, and
    undecodable bytes become U+FFFD (visible) rather than vanishing as in pyzk.
    """
    users = zp.decode_user_set(data, reported)
    if not users:
        return users
    body = bytes(data[4:])
    size = len(body) // len(users)
    out = []
    for index, user in enumerate(users):
        raw = body[index * size : (index + 1) * size]
        name = raw[_name_slice(size)].split(b"\x00", 1)[0].decode(encoding, errors="replace").strip()
        user_id = user.user_id
        if size == 72:
            user_id = raw[48:72].split(b"\x00", 1)[0].decode(encoding, errors="replace")
        out.append(dataclasses.replace(user, name=name, user_id=user_id))
    return out


# ---------------------------------------------------------------------------------------
# pyzk with our fixes
# ---------------------------------------------------------------------------------------


class NotZkError(Exception):
    """Something answered, but not with the ZK protocol."""

    def __init__(self, message: str, raw: bytes) -> None:
        self.raw = raw
        super().__init__(f"{message} (raw={raw[:32].hex()})")


class AuthRefused(Exception):
    """The terminal refused the comm key (or wants one and none is configured)."""


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
        # ommit_ping=True always: pyzk 0.9 otherwise shells out to `ping` and refuses to
        # connect when ICMP is filtered or ping is missing, though the terminal answers.
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

    # -- socket and session ---------------------------------------------------------------
    @property
    def sock(self) -> socket.socket:
        return self._ZK__sock

    def _ZK__create_socket(self) -> None:
        """Open the real socket and let failures raise (pyzk uses connect_ex and ignores it)."""
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

    def connect(self) -> PatchedZK:
        """CONNECT (and AUTH with the comm key); raises NotZkError / AuthRefused / OSError."""
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

    def _last_packet(self) -> bytes:
        return bytes(self._ZK__data_recv or b"")

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

    def _ZK__send_command(self, command: int, command_string: bytes = b"", response_size: int = 8) -> Any:
        """pyzk's send/receive, but a real-time event is never taken for the reply.

        An event can be on its way when we unregister, or be queued by the terminal after
        it; pyzk would read it as the answer to its next command and stay one reply behind
        for the rest of the session. Events (command 500, never a reply) are acknowledged,
        logged and skipped; the full read that follows picks their punches up.
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
        """Keep only the reply's own bytes when more arrived in the same recv.

        pyzk takes everything one recv returned as the reply's data. A live event queued just
        before we unregistered can land right behind the reply in the same segment, and
        would then be read as part of (say) a small attendance set. The envelope says where
        the reply ends; a trailing event is acknowledged and skipped like any stray event.
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
                self.sock.sendall(zp.tcp_wrap(zp.build_packet(zp.CMD_ACK_OK, self.session_id, packet.reply)))

    def _skip_stray_event(self, response_size: int) -> Any:
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

    def exchange(self, command: int, data: bytes = b"", response_size: int = 1024) -> zp.ZkPacket:
        """Send one command and return the terminal's reply packet (any reply code)."""
        self._ZK__send_command(command, data, response_size)
        header = self._ZK__header
        return zp.ZkPacket(header[0], header[2], header[3], bytes(self._ZK__data or b""), header[1])

    def next_reply_number(self) -> int:
        """The reply number pyzk would put on its next request (for our own asyncio sends)."""
        reply = int(self._ZK__reply_id) + 1
        return reply - zp.USHRT_MAX if reply >= zp.USHRT_MAX else reply

    def set_reply_number(self, reply: int) -> None:
        self._ZK__reply_id = reply

    @property
    def session_id(self) -> int:
        return int(self._ZK__session_id)

    # -- pyzk bug: clear_data sends a str ---------------------------------------------------
    def clear_data(self) -> bool:
        """CLEAR_DATA with bytes (pyzk 0.9 concatenates a str and raises TypeError)."""
        reply = self.exchange(zp.CMD_CLEAR_DATA, b"", 8)
        if reply.command != zp.CMD_ACK_OK:
            raise ZKErrorResponse(f"can't clear data (reply {reply.command})")
        self.next_uid = 1
        return True

    # -- bulk reads with progress ---------------------------------------------------------
    def _ZK__read_chunk(self, start: int, size: int) -> bytes:
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
        """READ_BUFFER over TCP, framed by the envelope lengths whatever the segment boundaries.

        pyzk 0.9 reassembles the PREPARE_DATA / DATA... / ACK_OK burst from the sizes it
        asked recv() for, and loses its place (then waits forever) when a segment boundary
        falls inside a packet header, which depends on timing. Here every packet is framed
        by its envelope length (the codec's reassembler) and matched on its reply number.
        """
        reply_no = self.next_reply_number()
        request = zp.build_packet(
            zp.CMD_READ_BUFFER, self.session_id, reply_no, zp.encode_read_buffer(start, size)
        )
        self.sock.sendall(zp.tcp_wrap(request))
        self.set_reply_number(reply_no)
        garbage: list[bytes] = []
        reassembler = zp.TcpReassembler(on_garbage=garbage.append)
        data = bytearray()
        expected: int | None = None
        while True:
            received = self.sock.recv(max(65536, size + 64))
            if not received:
                raise ConnectionResetError("the terminal closed the connection during a bulk read")
            if garbage:
                raise zp.ZkFrameError("bytes outside any ZK frame in a bulk read", garbage[0][:64])
            for raw in reassembler.feed(received):
                packet = zp.parse_packet(raw)  # a bad checksum raises: the data cannot be trusted
                if packet.command == zp.CMD_REG_EVENT:  # a straggling live event: ack, skip
                    self.sock.sendall(
                        zp.tcp_wrap(zp.build_packet(zp.CMD_ACK_OK, self.session_id, packet.reply))
                    )
                    continue
                if packet.reply != reply_no:
                    continue  # a late answer to something earlier; not ours
                if packet.command == zp.CMD_PREPARE_DATA:
                    expected = zp.decode_prepare_data(packet.data)[0]
                elif packet.command == zp.CMD_DATA:
                    data += packet.data
                    if expected is None:  # some firmware answers with one CMD_DATA, no burst
                        return bytes(data)
                elif packet.command == zp.CMD_ACK_OK and expected is not None:
                    if len(data) != expected:
                        raise zp.ZkFrameError(f"bulk read announced {expected} bytes, carried {len(data)}")
                    return bytes(data)
                else:
                    raise ZKErrorResponse(f"READ_BUFFER {start}+{size} answered with code {packet.command}")

    def read_table(self, command: int, fct: int) -> bytes:
        """A whole table through pyzk's buffered read (PREPARE_BUFFER / READ_BUFFER)."""
        data, _size = self.read_with_buffer(command, fct)
        return bytes(data)

    # -- small queries through the codec --------------------------------------------------
    def free_sizes(self) -> zp.FreeSizes:
        reply = self.exchange(zp.CMD_GET_FREE_SIZES, b"", 1024)
        if reply.command != zp.CMD_ACK_OK:
            raise ZKErrorResponse(f"GET_FREE_SIZES refused (reply {reply.command})")
        return zp.decode_free_sizes(reply.data)

    def option(self, key: str) -> str | None:
        """One OPTIONS_RRQ value, or None when the terminal does not know the key."""
        reply = self.exchange(zp.CMD_OPTIONS_RRQ, zp.encode_option_request(key), 1024)
        if reply.command != zp.CMD_ACK_OK or b"=" not in reply.data:
            return None
        return zp.decode_option_reply(reply.data)[1]

    def device_enabled(self) -> bool | None:
        """STATE_RRQ: the state travels in the session field, 0 = disabled (idle, refuses punches).

        None when the firmware does not answer the query (it is optional on older models).
        """
        reply = self.exchange(zp.CMD_STATE_RRQ, b"", 8)
        if reply.command != zp.CMD_ACK_OK:
            return None
        return reply.session != 0

    def firmware(self) -> str:
        reply = self.exchange(zp.CMD_GET_VERSION, b"", 1024)
        if reply.command != zp.CMD_ACK_OK:
            return ""
        return reply.data.split(b"\x00", 1)[0].decode("ascii", errors="replace")

    def clock_raw(self) -> int:
        reply = self.exchange(zp.CMD_GET_TIME, b"", 1032)
        if reply.command != zp.CMD_ACK_OK or len(reply.data) < 4:
            raise ZKErrorResponse(f"GET_TIME refused (reply {reply.command})")
        return int(struct.unpack_from("<I", reply.data)[0])

    def write_clock(self, when: dt.datetime) -> None:
        # pyzk's encoder uses year % 100 (wrong from 2100); the codec's is not.
        reply = self.exchange(zp.CMD_SET_TIME, struct.pack("<I", zp.encode_time(when)), 8)
        if reply.command != zp.CMD_ACK_OK:
            raise ZKErrorResponse(f"SET_TIME refused (reply {reply.command})")

    def set_timeout(self, seconds: float) -> None:
        self._ZK__timeout = seconds
        self.sock.settimeout(seconds)


# ---------------------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------------------

_UNREACHABLE_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)


def _root_cause(exc: BaseException) -> BaseException:
    """pyzk wraps socket errors in ZKNetworkError(str(e)); look through to the original."""
    seen = exc
    while isinstance(seen, ZKNetworkError):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    return seen


def map_error(
    exc: BaseException, *, device: str, what: str, connecting: bool, udp: bool = False
) -> DriverError:
    """Turn whatever pyzk or the socket raised into the driver's error hierarchy."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, AuthRefused):
        return AuthError(f"{what}: {exc} (check comm_key)", device=device)
    if isinstance(exc, NotZkError):
        return UnsupportedDeviceError(f"{what}: not a ZK terminal: {exc}", device=device)
    cause = _root_cause(exc)
    if isinstance(cause, TimeoutError):
        if connecting and udp:
            # Silence over UDP is all a missing terminal ever says.
            return UnreachableError(f"{what}: no answer within the timeout", device=device)
        if connecting:
            return DriverTimeoutError(f"{what}: connected, but no answer to CONNECT", device=device)
        return DriverTimeoutError(f"{what}: the terminal stopped answering", device=device)
    if isinstance(cause, socket.gaierror):
        return UnreachableError(f"{what}: cannot resolve the address: {cause.strerror}", device=device)
    if isinstance(cause, ConnectionRefusedError) or (
        isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS
    ):
        return UnreachableError(f"{what}: {cause.strerror or cause}", device=device)
    if isinstance(cause, ConnectionError | BrokenPipeError):
        return UnreachableError(f"{what}: connection lost ({cause})", device=device)
    if isinstance(cause, OSError):
        return UnreachableError(f"{what}: {cause}", device=device)
    if isinstance(exc, ZKErrorConnection):
        return ProtocolError(f"{what}: not connected", device=device)
    if isinstance(exc, ZKErrorResponse):
        return ProtocolError(f"{what}: {exc}", device=device)
    # pyzk parsing garbage: struct.error, IndexError, ValueError, TypeError, ZkFrameError...
    return ProtocolError(f"{what}: unexpected reply ({type(exc).__name__}: {exc})", device=device)


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------

# One session per terminal in this process: a second driver for the same address would
# knock the first one's session off (terminals allow one at a time).
_owners: dict[tuple[str, int, str], str] = {}


class ZkDriver:
    """One ZK terminal (one connection), behind the common async driver interface."""

    def __init__(self, config: ZkTerminal) -> None:
        self.config = config
        self.name = config.name
        self.encoding = config.encoding
        self.timeout = config.timeout
        self._comm_key = int(config.comm_key.get_secret_value()) if config.comm_key else 0
        self._zk: PatchedZK | None = None
        self._owner_key = (config.host, config.port, config.transport)
        self._desynced = False  # after a timeout or garbage the stream position is unknown
        self._live_active = False
        self._record_size: int | None = None  # learned on the first read
        self._uid_to_user_id: dict[int, str] = {}
        self.garbage_frames = 0  # frames that failed to decode (logged with hex)
        self.dropped_events = 0  # live events that could not be decoded

    # -- plumbing ---------------------------------------------------------------------------
    def _session(self) -> PatchedZK:
        if self._zk is None or not self._zk.is_connect:
            raise DriverError("not connected", device=self.name)
        if self._live_active:
            raise DriverError("a command was sent while live() is open; aclose() it first", device=self.name)
        return self._zk

    def _abort(self) -> None:
        """Unblock a pool thread stuck in recv: shut the socket down (close() closes it)."""
        self._desynced = True
        if self._zk is not None:
            with contextlib.suppress(OSError):
                self._zk.sock.shutdown(socket.SHUT_RDWR)

    async def _blocking(
        self, what: str, call: Callable[[], T], *, deadline: float | None = None, connecting: bool = False
    ) -> T:
        """Run one blocking pyzk call in the shared pool, bounded by an overall deadline."""

        def run() -> T:
            try:
                return call()
            except DriverError:
                raise
            except Exception as exc:
                raise map_error(
                    exc,
                    device=self.name,
                    what=what,
                    connecting=connecting,
                    udp=self.config.transport == "udp",
                ) from exc

        limit = deadline if deadline is not None else self.timeout * 3 + 5
        future = asyncio.get_running_loop().run_in_executor(_executor(), run)
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            # `run` maps its own errors, so a TimeoutError here is our deadline.
            self._abort()
            with contextlib.suppress(BaseException):
                await future
            cls = UnreachableError if connecting and self.config.transport == "udp" else DriverTimeoutError
            raise cls(f"{what}: no answer within {limit:.0f} s", device=self.name) from None
        except asyncio.CancelledError:
            self._abort()
            raise
        except DriverError as exc:
            if isinstance(exc, DriverTimeoutError | UnsupportedDeviceError) or (
                isinstance(exc, ProtocolError) and not isinstance(exc, CountMismatchError)
            ):
                self._desynced = True
            raise

    # -- Driver interface -------------------------------------------------------------------
    async def connect(self) -> None:
        await self.close()
        holder = _owners.get(self._owner_key)
        if holder is not None and holder != self.name:
            raise DriverError(
                f"{self.config.host}:{self.config.port} already has a session (terminal {holder!r})",
                device=self.name,
            )
        zk = PatchedZK(
            host=self.config.host,
            port=self.config.port,
            udp=self.config.transport == "udp",
            comm_key=self._comm_key,
            timeout=self.timeout,
            encoding=self.encoding,
        )
        self._desynced = False
        _owners[self._owner_key] = self.name
        self._zk = zk
        try:
            await self._blocking(
                f"connect {self.config.transport}://{self.config.host}:{self.config.port}",
                zk.connect,
                deadline=self.timeout * 2 + 5,
                connecting=True,
            )
        except BaseException:
            await self._teardown()
            raise
        log.info("zk_connected", device=self.name, transport=self.config.transport, host=self.config.host)

    async def close(self) -> None:
        """End the session: re-enable the terminal and say goodbye, then close the socket.

        Re-enabling on every close means a terminal left disabled (by us after a crash, or
        by another tool) is usable again after our next contact.
        """
        zk = self._zk
        if zk is None:
            return
        self._live_active = False
        try:
            if zk.is_connect and not self._desynced:
                short = min(self.timeout, 5.0)

                def goodbye() -> None:
                    zk.set_timeout(short)
                    try:
                        zk.enable_device()
                    finally:
                        zk.disconnect()

                await self._blocking("close", goodbye, deadline=short * 2 + 2)
        except DriverError as exc:
            log.warning("zk_close_failed", device=self.name, error=str(exc))
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        zk, self._zk = self._zk, None
        if _owners.get(self._owner_key) == self.name:
            del _owners[self._owner_key]
        if zk is not None:
            zk.is_connect = False
            with contextlib.suppress(OSError):
                zk.sock.close()

    async def info(self) -> DeviceInfo:
        zk = self._session()

        def ask() -> DeviceInfo:
            sizes = zk.free_sizes()
            clock_raw = zk.clock_raw()
            try:
                clock = zp.decode_time(clock_raw)
            except zp.ZkFrameError:
                clock = invalid_time_sentinel(clock_raw)  # a dead clock: flagged, not fatal
            extra: dict[str, Any] = {
                "fingers": sizes.fingers,
                "finger_capacity": sizes.finger_capacity,
                "admins": sizes.admins,
                "oplog_records": sizes.oplog,
                "clock_raw": clock_raw,
                "transport": self.config.transport,
            }
            if sizes.faces is not None:
                extra.update(faces=sizes.faces, face_capacity=sizes.face_capacity)
            enabled = zk.device_enabled()  # the health model's stuck_disabled check reads it
            if enabled is not None:
                extra["enabled"] = enabled
            device_name = zk.option("~DeviceName") or ""
            return DeviceInfo(
                serial_number=zk.option("~SerialNumber") or "",
                model=device_name,
                device_name=device_name,
                firmware=zk.firmware(),
                platform=zk.option("~Platform") or "",
                mac=zk.option("MAC") or "",
                clock=clock,
                user_count=sizes.users,
                user_capacity=sizes.user_capacity,
                record_count=sizes.records,
                record_capacity=sizes.record_capacity,
                extra=extra,
            )

        return await self._blocking("info", ask)

    async def read_records(self, progress: Callable[[int, int], None] | None = None) -> list[RawPunch]:
        """Every attendance record on the terminal, or CountMismatchError if they do not add up.

        `progress(bytes_so_far, total_bytes)` is called from a pool thread as chunks arrive.
        """
        zk = self._session()
        reported = await self._blocking("read record count", lambda: zk.free_sizes().records)
        if reported == 0:
            return []

        def download() -> bytes:
            zk.set_timeout(self.timeout + reported * READ_SECONDS_PER_RECORD)
            zk.on_chunk = progress
            try:
                return zk.read_table(zp.CMD_ATTLOG_RRQ, 0)
            finally:
                zk.on_chunk = None
                zk.set_timeout(self.timeout)

        deadline = self.timeout * 3 + 5 + reported * DEADLINE_SECONDS_PER_RECORD
        data = await self._blocking(f"read {reported} records", download, deadline=deadline)
        parsed = parse_attendance(data, reported, size_hint=self._record_size)
        raws = [raw_punch_from_record(r) for r in parsed.records]
        invalid = sum(1 for r in parsed.records if r.timestamp is None)
        if invalid:
            log.warning("zk_records_with_invalid_dates", device=self.name, count=invalid)
        if parsed.problems:
            log.warning(
                "zk_read_mismatch",
                device=self.name,
                reported=reported,
                parsed=len(raws),
                problems=list(parsed.problems),
                head=data[:48].hex(),
            )
            raise CountMismatchError(
                "; ".join(parsed.problems), device=self.name, reported=reported, records=raws
            )
        self._record_size = parsed.record_size
        return raws

    async def read_users(self) -> list[zp.UserRecord]:
        """Enrolled users, names decoded with the terminal's configured encoding."""
        zk = self._session()

        def download() -> list[zp.UserRecord]:
            reported = zk.free_sizes().users
            if reported == 0:
                return []
            data = zk.read_table(zp.CMD_USERTEMP_RRQ, zp.FCT_USER)
            try:
                return parse_users(data, reported, self.encoding)
            except zp.ZkFrameError as exc:
                raise ProtocolError(f"user table: {exc}", device=self.name) from exc

        users = await self._blocking("read users", download)
        self._uid_to_user_id = {u.uid: u.user_id for u in users}
        return users

    async def set_time(self, when: dt.datetime) -> None:
        zk = self._session()
        await self._blocking("set time", lambda: zk.write_clock(when.replace(tzinfo=None, microsecond=0)))
        log.info("zk_clock_set", device=self.name, to=when.isoformat())

    async def clear_records(self, expected_count: int) -> None:
        """Clear the log, but only if it still holds exactly `expected_count` records.

        The terminal is disabled first so no punch can arrive between the count check and
        the clear, and re-enabled in a finally whatever happens. Uses CLEAR_ATTLOG (15),
        never CLEAR_DATA, which would also erase users and fingerprints.
        """
        zk = self._session()

        def guarded_clear() -> int:
            zk.disable_device()
            try:
                count = zk.free_sizes().records
                if count != expected_count:
                    raise ClearRefusedError(
                        f"refusing to clear: terminal holds {count} records, {expected_count} were stored",
                        device=self.name,
                    )
                reply = zk.exchange(zp.CMD_CLEAR_ATTLOG, b"", 8)
                if reply.command != zp.CMD_ACK_OK:
                    raise ProtocolError(f"CLEAR_ATTLOG refused (reply {reply.command})", device=self.name)
                return int(zk.free_sizes().records)
            finally:
                zk.enable_device()

        left = await self._blocking("clear records", guarded_clear)
        if left:
            raise ProtocolError(f"terminal still reports {left} records after clearing", device=self.name)
        log.info("zk_log_cleared", device=self.name, records=expected_count)

    def live(self) -> AsyncGenerator[RawPunch | None, None] | None:
        if not self.config.live:
            return None
        return self._live_events()

    # -- live events ------------------------------------------------------------------------
    async def _live_events(self) -> AsyncGenerator[RawPunch | None, None]:
        """Real-time ATTLOG events, read by asyncio from pyzk's socket (no pool thread held).

        While registered, the socket belongs to this generator; pyzk does not touch it. The
        socket is made non-blocking for asyncio and given back blocking with its timeout.
        """
        zk = self._session()
        if self._record_size == 16 and not self._uid_to_user_id:
            # 16-byte logs carry user ids, 10/14-byte events only internal uids: map them
            # so a live punch gets the same identity as the same punch read from the log.
            with contextlib.suppress(DriverError):
                await self.read_users()
        await self._blocking("register events", lambda: zk.reg_event(zp.EF_ATTLOG))
        loop = asyncio.get_running_loop()
        sock = zk.sock
        sock.setblocking(False)
        self._live_active = True
        reassembler = zp.TcpReassembler(on_garbage=self._garbage) if zk.tcp else None
        pending: asyncio.Future[bytes] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(loop.sock_recv(sock, 65536))
                done, _ = await asyncio.wait({pending}, timeout=LIVE_TICK_SECONDS)
                if not done:
                    yield None  # idle tick: the worker may leave to reconcile
                    continue
                try:
                    chunk = pending.result()
                except OSError as exc:
                    self._desynced = True
                    raise map_error(exc, device=self.name, what="live", connecting=False) from exc
                finally:
                    pending = None
                if not chunk and zk.tcp:
                    self._desynced = True
                    raise UnreachableError("live: the terminal closed the connection", device=self.name)
                packets = reassembler.feed(chunk) if reassembler is not None else [chunk]
                for packet in packets:
                    punch = await self._on_event_packet(loop, sock, packet)
                    if punch is not None:
                        yield punch
        finally:
            leftover = b""
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    leftover = await pending  # bytes read just before the cancel still count
            await self._end_live(loop, zk, sock, reassembler, leftover)

    def _garbage(self, raw: bytes) -> None:
        self.garbage_frames += 1
        log.warning("zk_garbage_frame", device=self.name, raw=raw[:256].hex(), size=len(raw))

    async def _send(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, packet: bytes, tcp: bool
    ) -> None:
        await loop.sock_sendall(sock, zp.tcp_wrap(packet) if tcp else packet)

    async def _on_event_packet(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, raw: bytes
    ) -> RawPunch | None:
        zk = self._zk
        assert zk is not None
        try:
            packet = zp.parse_packet(raw)
        except zp.ZkFrameError:
            self._garbage(raw)
            return None
        if packet.command != zp.CMD_REG_EVENT:
            log.debug("zk_live_unexpected_packet", device=self.name, command=packet.command)
            return None
        # Every event is acknowledged, echoing its reply number, or the terminal resends it.
        await self._send(loop, sock, zp.build_packet(zp.CMD_ACK_OK, zk.session_id, packet.reply), zk.tcp)
        if packet.session != zp.EF_ATTLOG:  # the session field carries the event code
            log.debug("zk_live_other_event", device=self.name, event_code=packet.session)
            return None
        try:
            event = zp.decode_live_attendance(packet.data)
        except zp.ZkFrameError as exc:
            # Not lost: the next full read reconciles against the terminal's log.
            self.dropped_events += 1
            log.warning("zk_live_event_undecodable", device=self.name, error=str(exc), raw=packet.data.hex())
            return None
        user_id = event.user_id
        if len(packet.data) in (10, 14) and self._uid_to_user_id:
            user_id = self._uid_to_user_id.get(int(event.user_id), event.user_id)
        return RawPunch(
            user_id=user_id, timestamp=event.timestamp, state=event.state, verify=event.verify, raw=event.raw
        )

    async def _end_live(
        self,
        loop: asyncio.AbstractEventLoop,
        zk: PatchedZK,
        sock: socket.socket,
        reassembler: zp.TcpReassembler | None,
        leftover: bytes = b"",
    ) -> None:
        """Unregister events (REG_EVENT 0) from asyncio and hand the socket back to pyzk.

        Done here rather than with pyzk's reg_event(0) because an event already on its way
        would be read by pyzk as the reply, and every later reply would be off by one.
        Events that arrive meanwhile are acknowledged and left to the next full read.
        """
        self._live_active = False
        try:
            if self._zk is not zk or self._desynced or sock.fileno() < 0:
                return
            # Out of step until the unregistration's reply is seen (whatever fails meanwhile).
            self._desynced = True
            reply_no = zk.next_reply_number()
            request = zp.build_packet(zp.CMD_REG_EVENT, zk.session_id, reply_no, struct.pack("<I", 0))
            await self._send(loop, sock, request, zk.tcp)
            deadline = loop.time() + self.timeout
            chunk = leftover
            while True:
                if not chunk:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise DriverTimeoutError("live: no answer to unregistering events", device=self.name)
                    try:
                        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), remaining)
                    except TimeoutError:
                        continue
                if not chunk and zk.tcp:
                    raise UnreachableError("live: the terminal closed the connection", device=self.name)
                for raw in reassembler.feed(chunk) if reassembler is not None else [chunk]:
                    try:
                        packet = zp.parse_packet(raw)
                    except zp.ZkFrameError:
                        self._garbage(raw)
                        continue
                    if packet.command == zp.CMD_REG_EVENT:
                        await self._send(
                            loop, sock, zp.build_packet(zp.CMD_ACK_OK, zk.session_id, packet.reply), zk.tcp
                        )
                        log.info(
                            "zk_live_event_left_for_reconcile", device=self.name, event_code=packet.session
                        )
                    elif packet.reply == reply_no:
                        zk.set_reply_number(reply_no)
                        self._desynced = False
                        return
                chunk = b""
        except OSError as exc:
            raise map_error(exc, device=self.name, what="live", connecting=False) from exc
        finally:
            with contextlib.suppress(OSError):
                if sock.fileno() >= 0:
                    sock.settimeout(self.timeout)  # blocking again, for pyzk
