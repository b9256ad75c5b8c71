"""A fake ZK terminal on real loopback sockets (TCP and UDP) that turns hostile on cue.

    terminal = FakeTerminal(attack=attacks.endless_data)
    with serve(terminal, "udp") as peer:        # peer.port: where the driver connects
        ...

`FakeTerminal` answers like a ZK terminal: CONNECT, the queries behind `info()`, a buffered
read of its attendance log (PREPARE_BUFFER, READ_BUFFER bursts, FREE_DATA), REG_EVENT, the
goodbye. Every packet is built by the project's codec (`punchgate.drivers.zk.protocol`), so
only the attack differs from a real terminal: an attack is a function that may take over
the answer to any command (`Attack`). The attacks of the hardening issue are below.

Over TCP the terminal is a behaviour for `common.HostileTcpPeer`; over UDP, `HostileUdpPeer`
serves it the same way: its own event loop in a thread, so the attacker's work never counts
against the loop under test. Endless sending stops after ATTACK_SECONDS or ATTACK_BYTES, or
as soon as the other side is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from punchgate.drivers.zk import protocol as zp
from tests.hostile.common import MAX_ATTACK_SECONDS, Behaviour, HostileTcpPeer, send_for

ATTACK_SECONDS = 12.0  # longer than any driver call under attack may take
ATTACK_BYTES = 256 * 1024 * 1024  # what an endless attack sends at most (the driver keeps none of it)
HUGE = 1 << 31  # the size the hostile replies announce
SESSION_ID = 0x2A2A
SERIAL_NUMBER = "FAKE0000001"
VECTORS = Path(__file__).resolve().parents[1] / "data" / "zk_vectors.json"

# ---- what the terminal sends --------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """One bare packet: in its envelope over TCP, one datagram over UDP."""

    packet: bytes


@dataclass(frozen=True)
class Wire:
    """Bytes exactly as given: no envelope added over TCP; one datagram over UDP."""

    data: bytes


@dataclass(frozen=True)
class Endless:
    """The same bare packet again and again, until the attack's time or bytes are spent."""

    packet: bytes


@dataclass(frozen=True)
class Hangup:
    """TCP: close the connection. UDP: ignore the session from now on."""


Step = Send | Wire | Endless | Hangup
# An attack may take over the answer to a command: its steps, or None to answer normally.
Attack = Callable[["FakeTerminal", zp.ZkPacket, bool], list[Step] | None]


# ---- the terminal -------------------------------------------------------------------------


def attendance_log(records: int) -> bytes:
    """A data set of `records` 40-byte attendance records (TFT layout)."""
    start = dt.datetime(2024, 3, 4, 8, 0, 0)
    encoded = []
    for n in range(records):
        when = start + dt.timedelta(minutes=7 * n)
        record = zp.AttendanceRecord(
            uid=1 + n % 5,
            user_id=str(1 + n % 5),
            time_raw=zp.encode_time(when),
            timestamp=when,
            verify=1,
            state=n % 2,
        )
        encoded.append(zp.encode_attendance(record, 40))
    return zp.encode_data_set(encoded)


@dataclass
class FakeTerminal:
    """A ZK terminal's answers, with an optional attack; `slow` trickles every byte (TCP)."""

    attack: Attack | None = None
    records: int = 30  # 30 x 40 bytes: staged for READ_BUFFER, like a real log
    claimed_records: int | None = None  # what GET_FREE_SIZES says (default: the truth)
    record_capacity: int = 200_000
    slow: float = 0.0  # seconds between two bytes of every reply (TCP)
    received: list[zp.ZkPacket] = field(default_factory=list)  # every packet the driver sent

    def __post_init__(self) -> None:
        self.log = attendance_log(self.records)

    # -- answering --------------------------------------------------------------------------
    def answer(self, packet: zp.ZkPacket, tcp: bool) -> list[Step]:
        self.received.append(packet)
        if self.attack is not None:
            steps = self.attack(self, packet, tcp)
            if steps is not None:
                return steps
        return self.normal(packet, tcp)

    def normal(self, packet: zp.ZkPacket, tcp: bool) -> list[Step]:
        command = packet.command
        if command == zp.CMD_GET_FREE_SIZES:
            return [self.reply(packet, data=self.free_sizes())]
        if command == zp.CMD_GET_TIME:
            now = dt.datetime.now().replace(microsecond=0)
            return [self.reply(packet, data=struct.pack("<I", zp.encode_time(now)))]
        if command == zp.CMD_STATE_RRQ:
            return [Send(zp.build_packet(zp.CMD_ACK_OK, 2, packet.reply))]  # the state: enabled
        if command == zp.CMD_OPTIONS_RRQ:
            return [self.option(packet)]
        if command == zp.CMD_GET_VERSION:
            return [self.reply(packet, data=b"Ver 6.60 Fake\x00")]
        if command == zp.CMD_PREPARE_BUFFER:
            if len(self.log) <= zp.TCP_DATA_CHUNK:
                return [self.reply(packet, code=zp.CMD_DATA, data=self.log)]
            return [self.reply(packet, data=zp.encode_buffer_ready(len(self.log)))]
        if command == zp.CMD_READ_BUFFER:
            start, size = zp.decode_read_buffer(packet.data)
            return self.burst(packet, self.log[start : start + size], tcp)
        if command == zp.CMD_CLEAR_ATTLOG:
            self.records, self.claimed_records, self.log = 0, None, attendance_log(0)
            return [self.reply(packet)]
        if command == zp.CMD_EXIT:
            return [self.reply(packet), Hangup()]
        if command in (zp.CMD_ACK_OK, zp.CMD_ACK_UNKNOWN, zp.CMD_ACK_ERROR):
            return []  # an acknowledgement (of an event) wants no answer
        return [self.reply(packet)]  # CONNECT, enable/disable, FREE_DATA, REG_EVENT, SET_TIME...

    def reply(self, packet: zp.ZkPacket, *, code: int = zp.CMD_ACK_OK, data: bytes = b"") -> Send:
        return Send(zp.build_packet(code, SESSION_ID, packet.reply, data))

    def free_sizes(self, *, records: int | None = None, capacity: int | None = None) -> bytes:
        claimed = records if records is not None else self.claimed_records
        sizes = zp.FreeSizes(
            users=5,
            user_capacity=10_000,
            records=claimed if claimed is not None else self.records,
            record_capacity=capacity if capacity is not None else self.record_capacity,
        )
        return zp.encode_free_sizes(sizes, 92)

    def option(self, packet: zp.ZkPacket) -> Send:
        key = zp.decode_option_request(packet.data)
        values = {
            "~SerialNumber": SERIAL_NUMBER,
            "~DeviceName": "Fake",
            "~Platform": "ZEM600_TFT",
            "MAC": "00:17:61:00:00:01",
        }
        if key not in values:
            return self.reply(packet, code=zp.CMD_ACK_ERROR)
        return self.reply(packet, data=zp.encode_option_reply(key, values[key]))

    def burst(self, packet: zp.ZkPacket, payload: bytes, tcp: bool) -> list[Step]:
        """PREPARE_DATA, CMD_DATA chunks (session field: chunk index), ACK_OK, as terminals send."""
        chunk = chunk_size(tcp)
        steps: list[Step] = [
            self.reply(packet, code=zp.CMD_PREPARE_DATA, data=zp.encode_prepare_data(len(payload), chunk))
        ]
        index = 0
        for index, start in enumerate(range(0, len(payload), chunk)):
            steps.append(
                Send(zp.build_packet(zp.CMD_DATA, index, packet.reply, payload[start : start + chunk]))
            )
        steps.append(Send(zp.build_packet(zp.CMD_ACK_OK, index, packet.reply)))
        return steps

    # -- over TCP ---------------------------------------------------------------------------
    def tcp_behaviour(self) -> Behaviour:
        async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            reassembler = zp.TcpReassembler()
            while data := await reader.read(65536):
                for raw in reassembler.feed(data):
                    for step in self.answer(zp.parse_packet(raw, verify=False), tcp=True):
                        if isinstance(step, Hangup):
                            return
                        await self._tcp_step(writer, step)

        return behaviour

    async def _tcp_step(self, writer: asyncio.StreamWriter, step: Step) -> None:
        if isinstance(step, Endless):
            framed = zp.tcp_wrap(step.packet) * 16
            await send_for(writer, lambda: framed, seconds=ATTACK_SECONDS, max_bytes=ATTACK_BYTES)
            return
        data = (
            zp.tcp_wrap(step.packet)
            if isinstance(step, Send)
            else step.data
            if isinstance(step, Wire)
            else b""
        )
        if not self.slow:
            writer.write(data)
            await writer.drain()
            return
        for index in range(len(data)):
            writer.write(data[index : index + 1])
            await writer.drain()
            await asyncio.sleep(self.slow)


def chunk_size(tcp: bool) -> int:
    return zp.TCP_DATA_CHUNK if tcp else zp.UDP_DATA_CHUNK


# ---- over UDP -------------------------------------------------------------------------------


class HostileUdpPeer:
    """A UDP endpoint on a free loopback port that answers datagrams with a `FakeTerminal`.

    Built like the peers in common.py: its own event loop in a daemon thread, every endless
    attack cut off after ATTACK_SECONDS / ATTACK_BYTES, or when the other side's port is gone
    (an ICMP "port unreachable" comes back as an error).
    """

    def __init__(self, terminal: FakeTerminal) -> None:
        self.terminal = terminal
        self.host = "127.0.0.1"
        self.port = 0
        self.errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="HostileUdpPeer", daemon=True)
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._hung_up: set[tuple[str, int]] = set()
        self._gone = False  # an ICMP error came back: whoever we flood has closed

    def start(self) -> Self:
        self._thread.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        peer = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                peer._received(data, addr)

            def error_received(self, exc: Exception) -> None:
                peer._gone = True

        async def open_endpoint() -> None:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Protocol, sock=sock)
            self._transport = transport

        self._call(open_endpoint())
        return self

    def stop(self) -> None:
        async def close() -> None:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._transport is not None:
                self._transport.close()

        with contextlib.suppress(Exception):
            self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Awaitable[object], timeout: float = 10.0) -> object:
        async def wrap() -> object:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr in self._hung_up or self._transport is None:
            return
        try:
            steps = self.terminal.answer(zp.parse_packet(data, verify=False), tcp=False)
        except zp.ZkFrameError:
            return
        except Exception as exc:  # a broken attack must fail the test, not vanish
            self.errors.append(exc)
            return
        for step in steps:
            if isinstance(step, Hangup):
                self._hung_up.add(addr)
                return
            if isinstance(step, Endless):
                task = self._loop.create_task(self._endless(step.packet, addr))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                continue
            self._transport.sendto(step.packet if isinstance(step, Send) else step.data, addr)

    async def _endless(self, packet: bytes, addr: tuple[str, int]) -> None:
        assert self._transport is not None
        self._gone = False
        sent = 0
        deadline = time.monotonic() + min(ATTACK_SECONDS, MAX_ATTACK_SECONDS)
        while sent < ATTACK_BYTES and time.monotonic() < deadline and not self._gone:
            for _ in range(32):
                self._transport.sendto(packet, addr)
            sent += 32 * len(packet)
            await asyncio.sleep(0.0005)  # the datagrams leave; other sessions are served too


@contextlib.contextmanager
def serve(terminal: FakeTerminal, transport: str) -> Iterator[HostileTcpPeer | HostileUdpPeer]:
    """The terminal on a free loopback port over `transport`; stopped on the way out."""
    peer = (
        HostileTcpPeer(terminal.tcp_behaviour(), max_seconds=MAX_ATTACK_SECONDS)
        if transport == "tcp"
        else HostileUdpPeer(terminal)
    )
    with peer:
        yield peer
    assert not peer.errors, peer.errors


# ---- the attacks ----------------------------------------------------------------------------


def huge_envelope(terminal: FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[Step] | None:
    """The data set comes as one packet whose envelope announces 2**31 bytes; after one data
    packet's worth the terminal closes the connection (TCP only: UDP has no envelope)."""
    if packet.command != zp.CMD_PREPARE_BUFFER:
        return None
    body = zp.build_packet(zp.CMD_DATA, 0, packet.reply, bytes(zp.TCP_DATA_CHUNK))
    return [Wire(zp.TCP_MAGIC + struct.pack("<I", HUGE) + body), Hangup()]


def huge_announcement(terminal: FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[Step] | None:
    """PREPARE_BUFFER announces a 2**31-byte data set; READ_BUFFER gets one data packet, then
    the terminal hangs up."""
    if packet.command == zp.CMD_PREPARE_BUFFER:
        return [terminal.reply(packet, data=zp.encode_buffer_ready(HUGE))]
    if packet.command == zp.CMD_READ_BUFFER:
        chunk = chunk_size(tcp)
        return [
            terminal.reply(packet, code=zp.CMD_PREPARE_DATA, data=zp.encode_prepare_data(HUGE, chunk)),
            Send(zp.build_packet(zp.CMD_DATA, 0, packet.reply, bytes(chunk))),
            Hangup(),
        ]
    return None


def endless_data(terminal: FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[Step] | None:
    """READ_BUFFER: PREPARE_DATA announcing what was asked, then CMD_DATA packets for ever."""
    if packet.command != zp.CMD_READ_BUFFER:
        return None
    _, size = zp.decode_read_buffer(packet.data)
    chunk = chunk_size(tcp)
    return [
        terminal.reply(packet, code=zp.CMD_PREPARE_DATA, data=zp.encode_prepare_data(size, chunk)),
        Endless(zp.build_packet(zp.CMD_DATA, 0, packet.reply, bytes(chunk))),
    ]


def endless_strays(terminal: FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[Step] | None:
    """READ_BUFFER: PREPARE_DATA, then for ever CMD_DATA packets answering another request."""
    steps = endless_data(terminal, packet, tcp)
    if steps is None:
        return None
    stray = zp.build_packet(zp.CMD_DATA, 0, (packet.reply + 7) & 0xFFFF, bytes(chunk_size(tcp)))
    return [steps[0], Endless(stray)]


def claimed_count(
    records: int = 0x7FFFFFFF, capacity: int | None = None
) -> Callable[[FakeTerminal, zp.ZkPacket, bool], list[Step] | None]:
    """GET_FREE_SIZES claims `records` records (2,147,483,647 by default) and optionally a
    capacity; a read that goes ahead anyway gets data for ever."""

    def attack(terminal: FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[Step] | None:
        if packet.command == zp.CMD_GET_FREE_SIZES:
            return [terminal.reply(packet, data=terminal.free_sizes(records=records, capacity=capacity))]
        if packet.command == zp.CMD_PREPARE_BUFFER:
            return [terminal.reply(packet, data=zp.encode_buffer_ready(HUGE))]
        return endless_data(terminal, packet, tcp)

    return attack


SHORT_REPLY_COMMANDS = frozenset(
    {zp.CMD_ENABLEDEVICE, zp.CMD_DISABLEDEVICE, zp.CMD_STATE_RRQ, zp.CMD_CLEAR_ATTLOG, zp.CMD_SET_TIME}
)
LONG_EVENT = zp.build_packet(zp.CMD_REG_EVENT, zp.EF_ATTLOG, 0, b"7".ljust(24, b"\x00") + bytes(36))


def long_event_before_short_replies(
    terminal: FakeTerminal, packet: zp.ZkPacket, tcp: bool
) -> list[Step] | None:
    """Before every reply pyzk reads with a small recv (enable/disable, STATE_RRQ, CLEAR_ATTLOG,
    SET_TIME), a 60-byte live event: longer than that recv."""
    if packet.command not in SHORT_REPLY_COMMANDS:
        return None
    return [Send(LONG_EVENT), *terminal.normal(packet, tcp)]


# ---- real frames, for mutations ----------------------------------------------------------------


def _vectors() -> dict[str, bytes]:
    """Every captured terminal->client frame of tests/data/zk_vectors.json, as a bare packet."""
    frames = {}
    for entry in json.loads(VECTORS.read_text()):
        if entry["direction"] != "device->client" or entry["framing"] == "payload-only":
            continue
        raw = bytes.fromhex(entry["hex"])
        # As captured: some envelopes announce more than the capture holds.
        frames[entry["id"]] = raw[zp.TCP_ENVELOPE_SIZE :] if entry["framing"] == "tcp-envelope" else raw
    return frames


CAPTURED = _vectors()
# Captured answers for the commands the driver sends (a READ_BUFFER burst of 70 users).
CAPTURED_REPLIES: dict[int, list[list[str]]] = {
    zp.CMD_CONNECT: [["pyzk-connect-ack"], ["pyzk-K20-connect-ack"], ["pyzk-auth-unauth"]],
    zp.CMD_GET_FREE_SIZES: [
        ["pyzk-freesizes-reply-7users"],
        ["pyzk-freesizes-reply-K20"],
        ["pyzk-freesizes-reply-70users"],
    ],
    zp.CMD_OPTIONS_RRQ: [["adro-options-platform-reply"], ["adro-options-workcode-reply"]],
    zp.CMD_STATE_RRQ: [["adro-state-reply"]],
    zp.CMD_PREPARE_BUFFER: [["pyzk-users-direct-7"], ["pyzk-K20-users-data"], ["pyzk-70u-prepbuf-ack"]],
    zp.CMD_READ_BUFFER: [
        ["pyzk-70u-prepare-data", *(f"pyzk-70u-data-{n}" for n in range(6)), "pyzk-tpl1-final-ack"],
        ["pyzk-tpl1-prepare-data", "pyzk-tpl1-data-0", "pyzk-tpl1-data-1", "pyzk-tpl1-final-ack"],
    ],
}


def restamped(packet: bytes, reply: int) -> bytes:
    """A captured packet answering request number `reply` (checksum recomputed)."""
    parsed = zp.parse_packet(packet, verify=False)
    return zp.build_packet(parsed.command, parsed.session, reply, parsed.data)


@dataclass(frozen=True)
class Mutation:
    """Replace the answer to `command` by its wire bytes (own or captured), mutated by `edit`."""

    command: int
    edit: Callable[[bytes], bytes]
    captured: int | None = None  # index into CAPTURED_REPLIES[command]; None: the fake's own
    datagram: int = 0  # over UDP: which datagram of the answer is mutated
    once: bool = True
    used: list[bool] = field(default_factory=list)

    def __call__(self, terminal: FakeTerminal, packet: zp.ZkPacket, tcp: bool) -> list[Step] | None:
        if packet.command != self.command or (self.once and self.used):
            return None
        self.used.append(True)
        if self.captured is not None:
            names = CAPTURED_REPLIES[self.command][self.captured % len(CAPTURED_REPLIES[self.command])]
            packets = [restamped(CAPTURED[name], packet.reply) for name in names]
        else:
            packets = [s.packet for s in terminal.normal(packet, tcp) if isinstance(s, Send)]
        if tcp:
            return [Wire(self.edit(b"".join(zp.tcp_wrap(p) for p in packets)))]
        which = self.datagram % len(packets)
        return [Wire(self.edit(p)) if n == which else Send(p) for n, p in enumerate(packets)]
