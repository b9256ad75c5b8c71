"""`ZkEmulator`: one simulated ZK terminal serving the protocol over TCP and/or UDP.

One client session at a time, like real terminals: a second TCP client is accepted but
waits (its requests stay unread) until the first session ends; a second UDP client is
ignored until then. Both see what they see on real hardware: a timeout. A UDP session
that stays silent longer than `session_timeout` is dropped so a crashed client cannot
lock the terminal forever (TCP sessions end when the connection closes).

Live EF_ATTLOG events go out one at a time, never inside a pending reply, and the next
one waits for the client's ACK_OK (or `event_ack_timeout`), because clients read each
packet with one recv() and would glue two events together.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import structlog

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.faults import ONE_SHOT_FAULTS, Fault, check_fault
from punchgate.drivers.zk.emulator.links import Link, TcpLink, UdpLink
from punchgate.drivers.zk.emulator.profiles import FirmwareProfile, Transport, get_profile
from punchgate.drivers.zk.emulator.state import TerminalClock, TerminalData
from punchgate.drivers.zk.protocol import AttendanceRecord, UserRecord

log = structlog.get_logger(__name__)

# A data set up to this size is answered directly with one CMD_DATA (like the captured
# 7-user reply); bigger ones are staged for READ_BUFFER. 1008 keeps the direct packet
# inside the 1024-byte read pyzk does for that reply over UDP.
DIRECT_REPLY_LIMIT = p.TCP_DATA_CHUNK
DEAD_BATTERY_TIME = dt.datetime(2000, 1, 1)

_AFTER = Literal["exit", "restart"]
_CMD_DATA_LE = struct.pack("<H", p.CMD_DATA)


@dataclass(frozen=True, slots=True)
class EmulatorCounters:
    """What the emulator has seen and done since start."""

    packets: int = 0
    sessions_served: int = 0
    bad_checksum_count: int = 0
    garbage_count: int = 0  # bytes on TCP that were not a frame, or too-short datagrams
    unknown_commands: int = 0
    auth_failures: int = 0
    busy_rejections: int = 0  # UDP datagrams from a second client while a session was open
    events_sent: int = 0
    punches_refused: int = 0
    restarts: int = 0


@dataclass(eq=False)
class _Session:
    id: int
    link: Link
    authenticated: bool
    last_seen: float
    event_mask: int = 0
    staged: bytes | None = None
    busy: bool = False
    ack_timer: asyncio.TimerHandle | None = None
    events: deque[bytes] = field(default_factory=deque)


@dataclass
class _Reply:
    packets: list[bytes]
    bulk: bool = False
    after: _AFTER | None = None


class ZkEmulator:
    """A simulated ZK terminal. Create, `await start()`, use, `await stop()`."""

    def __init__(
        self,
        *,
        profile: str | FirmwareProfile = "tft",
        serial_number: str = "EMU0000000001",
        device_name: str | None = None,
        platform: str | None = None,
        firmware_version: str | None = None,
        mac: str = "00:17:61:00:00:01",
        comm_key: int = 0,
        host: str = "127.0.0.1",
        tcp_port: int = 0,
        udp_port: int = 0,
        transports: Iterable[Transport] | None = None,
        record_capacity: int | None = None,
        user_capacity: int | None = None,
        clock_offset: dt.timedelta = dt.timedelta(0),
        clock_drift: float = 0.0,
        session_timeout: float = 60.0,
        event_ack_timeout: float = 1.0,
        restart_downtime: float = 1.0,
        tcp_packet_interval: float = 0.0005,
        session_ids: Iterable[int] = (),
        text_encoding: str = "utf-8",
        name: str | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, FirmwareProfile) else get_profile(profile)
        wanted = frozenset(transports) if transports is not None else self.profile.transports
        extra = wanted - self.profile.transports
        if extra:
            raise ValueError(
                f"profile {self.profile.name!r} speaks {', '.join(sorted(self.profile.transports))} only, "
                f"not {', '.join(sorted(extra))}"
            )
        if not wanted:
            raise ValueError("at least one transport is needed")
        self.transports: frozenset[Transport] = wanted
        self.name = name or serial_number
        self.host = host
        self._serial_number = serial_number
        self.device_name = device_name or self.profile.device_name
        self.platform = platform or self.profile.platform
        self.firmware_version = firmware_version or self.profile.firmware_version
        self.mac = mac
        self._comm_key = comm_key
        self._wanted_ports = {"tcp": tcp_port, "udp": udp_port}
        self.data = TerminalData(self.profile, text_encoding=text_encoding)
        if record_capacity is not None:
            self.data.record_capacity = record_capacity
        if user_capacity is not None:
            self.data.user_capacity = user_capacity
        self.clock = TerminalClock(offset=clock_offset, drift_rate=clock_drift)
        self.session_timeout = session_timeout
        self.event_ack_timeout = event_ack_timeout
        self.restart_downtime = restart_downtime
        self.tcp_packet_interval = tcp_packet_interval
        self.enabled = True
        self._written_options: dict[str, str] = {}
        self._faults: dict[str, dict[str, Any]] = {}
        self._saved: dict[str, Any] = {}  # what a fault replaced, restored on clear
        self._counters = EmulatorCounters()
        self._rng = random.Random()
        # Session ids to hand out first (tests replay captured frames); then random ones.
        self._session_ids = deque(session_ids)
        self._tcp_server: asyncio.Server | None = None
        self._udp_endpoint: asyncio.DatagramTransport | None = None
        self._udp_queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self._udp_links: dict[tuple[str, int], UdpLink] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp_worker_task: asyncio.Task[None] | None = None
        self._links: set[Link] = set()
        self._owner: Link | None = None
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._session: _Session | None = None
        self._running = False
        self._log = log.bind(terminal=self.name)

    # ------------------------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listeners (port 0 = any free port) and start serving."""
        if self._running:
            return
        self._running = True
        self._udp_worker_task = self._spawn(self._udp_worker())
        await self._open_listeners()
        self._log.info(
            "zk_emulator_started",
            profile=self.profile.name,
            serial=self.serial_number,
            tcp_port=self.tcp_port,
            udp_port=self.udp_port,
            records=self.data.record_count,
            users=self.data.user_count,
            comm_key=bool(self._comm_key),
        )

    async def stop(self) -> None:
        """Close listeners and every connection; no task is left behind."""
        if not self._running:
            return
        self._running = False
        await self._close_listeners()
        for link in list(self._links):
            link.close()
        if self._udp_worker_task is not None:
            self._udp_worker_task.cancel()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        # Closed links end their connection handlers; give them a moment, then cancel.
        _, stuck = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        self._session = None
        self._owner = None
        self._log.info("zk_emulator_stopped")

    async def __aenter__(self) -> ZkEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def tcp_port(self) -> int | None:
        """The bound TCP port, or None when TCP is off (or refused by a fault)."""
        if self._tcp_server is None or not self._tcp_server.sockets:
            return None
        return int(self._tcp_server.sockets[0].getsockname()[1])

    @property
    def udp_port(self) -> int | None:
        if self._udp_endpoint is None:
            return None
        return int(self._udp_endpoint.get_extra_info("sockname")[1])

    async def _open_listeners(self) -> None:
        if "tcp" in self.transports and self._tcp_server is None:
            self._tcp_server = await asyncio.start_server(
                self._serve_tcp, self.host, self._wanted_ports["tcp"], reuse_address=True
            )
            self._wanted_ports["tcp"] = self.tcp_port or 0  # rebind the same port after a restart
        if "udp" in self.transports and self._udp_endpoint is None:
            loop = asyncio.get_running_loop()
            endpoint, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self._wanted_ports["udp"])
            )
            self._udp_endpoint = endpoint
            self._wanted_ports["udp"] = self.udp_port or 0

    async def _close_listeners(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        if self._udp_endpoint is not None:
            self._udp_endpoint.close()
            self._udp_endpoint = None
            self._udp_links.clear()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------------------------
    # State readers and the test / CLI API
    # ------------------------------------------------------------------------------------

    @property
    def serial_number(self) -> str:
        return (
            str(self._faults["serial_changed"]["serial"])
            if "serial_changed" in self._faults
            else self._serial_number
        )

    @property
    def comm_key(self) -> int:
        return (
            int(self._faults["comm_key_changed"]["key"])
            if "comm_key_changed" in self._faults
            else self._comm_key
        )

    @property
    def counters(self) -> EmulatorCounters:
        return self._counters

    @property
    def records(self) -> list[AttendanceRecord]:
        return self.data.records()

    @property
    def record_count(self) -> int:
        return self.data.record_count

    @property
    def users(self) -> list[UserRecord]:
        return self.data.users

    @property
    def session_active(self) -> bool:
        return self._session is not None

    @property
    def active_faults(self) -> dict[str, dict[str, Any]]:
        return {name: dict(params) for name, params in self._faults.items()}

    def now(self) -> dt.datetime:
        """The terminal's clock."""
        return self.clock.now()

    def add_user(self, user_id: str, *, name: str = "", privilege: int = 0, card: int = 0) -> UserRecord:
        return self.data.add_user(user_id, name=name, privilege=privilege, card=card)

    def generate_log(self, records: int, days: int = 30, users: int = 50, seed: int = 0) -> None:
        """Add `records` realistic punches by `users` users (created if missing) over `days`."""
        self.data.generate_log(records=records, days=days, users=users, seed=seed, end=self.clock.now())

    def add_punch(
        self,
        user_id: str,
        when: dt.datetime | None = None,
        *,
        state: int = 0,
        verify: int = 1,
        work_code: int = 0,
    ) -> AttendanceRecord | None:
        """Someone punches at the terminal. Stores the record and pushes a live event to a
        session that registered EF_ATTLOG. Returns None when the terminal refuses the punch
        (disabled, or log full), as a real one shows an error on its screen."""
        user = self.data.user_by_id(user_id)
        if user is None:
            raise ValueError(f"{self.name}: no user {user_id!r} enrolled")
        refusal = "disabled" if not self.enabled else "log_full" if self.data.log_full else None
        if refusal:
            self._bump(punches_refused=1)
            self._log.info("zk_punch_refused", user_id=user_id, reason=refusal)
            return None
        when = (when or self.clock.now()).replace(microsecond=0)
        raw = self.data.append_record(user, when, state=state, verify=verify, work_code=work_code)
        record = p.decode_attendance(
            raw, self.data.record_size, eight_byte_variant=self.profile.eight_byte_variant
        )
        self._log.debug("zk_punch", user_id=user_id, time=when.isoformat(), state=state, verify=verify)
        session = self._session
        if session is not None and session.event_mask & p.EF_ATTLOG and not session.link.abandoned:
            size = self.profile.live_event_size
            event_user = str(user.uid) if size in (10, 14) else user.user_id
            payload = p.encode_live_attendance(
                p.LiveAttendance(user_id=event_user, verify=verify, state=state, timestamp=when), size
            )
            session.events.append(p.build_packet(p.CMD_REG_EVENT, p.EF_ATTLOG, 0, payload))
            self._pump_events(session)
        return record

    def _bump(self, **deltas: int) -> None:
        current = self._counters
        self._counters = dataclasses.replace(
            current, **{k: getattr(current, k) + v for k, v in deltas.items()}
        )

    # ------------------------------------------------------------------------------------
    # Faults
    # ------------------------------------------------------------------------------------

    async def set_fault(self, name: Fault, **params: Any) -> None:
        """Switch a fault on (see `drivers.zk.emulator.faults.Fault` for names and params)."""
        check_fault(name, params)
        self._log.warning("zk_fault_set", fault=name, **params)
        if name == "log_cleared":
            dropped = self.data.clear_log()
            self._log.warning("zk_log_cleared_behind_back", dropped=dropped)
            return
        if name == "restart":
            await self._restart(
                silent=bool(params.get("silent", True)), downtime=float(params.get("downtime", 0))
            )
            return
        if name == "comm_key_changed":
            params.setdefault("key", self._comm_key + 1)
        elif name == "serial_changed":
            params.setdefault("serial", self._serial_number + "R")
        elif name == "dead_battery":
            self._saved.setdefault("clock_offset", self.clock.offset)
            self.clock.set(DEAD_BATTERY_TIME)
        elif name == "clock_drift":
            self._saved.setdefault("clock_offset", self.clock.offset)
            self._saved.setdefault("clock_drift", self.clock.drift_rate)
            self.clock.set_offset(self.clock.offset + dt.timedelta(seconds=float(params.get("offset", 0))))
            self.clock.set_drift(float(params.get("rate", 0.001)))
        elif name == "log_full":
            self._saved.setdefault("record_capacity", self.data.record_capacity)
            self.data.record_capacity = self.data.record_count
        elif name == "refuse_connections":
            await self._close_listeners()
        self._faults[name] = params

    async def clear_fault(self, name: Fault) -> None:
        """Switch a fault off and restore what it changed. One-shot faults need no clearing."""
        check_fault(name, {})
        if name in ONE_SHOT_FAULTS or name not in self._faults:
            return
        del self._faults[name]
        self._log.warning("zk_fault_cleared", fault=name)
        if name in ("dead_battery", "clock_drift") and "clock_offset" in self._saved:
            if "dead_battery" not in self._faults and "clock_drift" not in self._faults:
                self.clock.set_offset(self._saved.pop("clock_offset"))
                self.clock.set_drift(self._saved.pop("clock_drift", 0.0))
        elif name == "log_full":
            self.data.record_capacity = self._saved.pop("record_capacity")
        elif name == "refuse_connections" and self._running:
            await self._open_listeners()

    def _fault(self, name: str) -> dict[str, Any] | None:
        return self._faults.get(name)

    def _use_counted_fault(self, name: str) -> bool:
        """True when a fault with an optional `count` applies to this reply (and spends one)."""
        params = self._faults.get(name)
        if params is None:
            return False
        count = params.get("count")
        if count is not None:
            if count <= 1:
                del self._faults[name]
            else:
                params["count"] = count - 1
        return True

    async def _restart(self, *, silent: bool, downtime: float) -> None:
        """Reboot: the session is gone, events stop, the terminal comes back enabled."""
        self._bump(restarts=1)
        session = self._session
        self._log.warning("zk_restart", silent=silent, downtime=downtime, had_session=session is not None)
        if session is not None:
            link = session.link
            self._end_session("restart")
            if isinstance(link, TcpLink):
                if silent:
                    link.abandoned = True
                else:
                    link.close()
        self.enabled = True
        if downtime > 0 and self._running:
            await self._close_listeners()
            self._spawn(self._come_back_after(downtime))

    async def _come_back_after(self, downtime: float) -> None:
        await asyncio.sleep(downtime)
        if self._running and "refuse_connections" not in self._faults:
            await self._open_listeners()
            self._log.info("zk_restart_done", tcp_port=self.tcp_port, udp_port=self.udp_port)

    # ------------------------------------------------------------------------------------
    # The one-session slot
    # ------------------------------------------------------------------------------------

    def _evict_idle_owner(self) -> None:
        owner = self._owner
        session = self._session
        if isinstance(owner, UdpLink) and (
            session is None or time.monotonic() - session.last_seen > self.session_timeout
        ):
            self._log.info("zk_session_expired", peer=owner.peer)
            self._release(owner)

    async def _claim(self, link: Link) -> None:
        """Wait until no other client holds the terminal, then take it."""
        while self._owner is not None and self._owner is not link:
            self._evict_idle_owner()
            if self._owner is None:
                break
            self._slot_free.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), timeout=1.0)
        self._owner = link
        self._slot_free.clear()

    def _release(self, link: Link) -> None:
        if self._session is not None and self._session.link is link:
            self._end_session("released")
        if self._owner is link:
            self._owner = None
            self._slot_free.set()

    def _end_session(self, reason: str) -> None:
        session = self._session
        if session is None:
            return
        self._session = None
        if session.ack_timer is not None:
            session.ack_timer.cancel()
        if self._owner is session.link:
            self._owner = None
            self._slot_free.set()
        if "stays_disabled" not in self._faults:
            self.enabled = True
        self._log.info("zk_session_ended", session=f"0x{session.id:04x}", reason=reason, enabled=self.enabled)

    # ------------------------------------------------------------------------------------
    # Transports
    # ------------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        link = TcpLink(writer)
        self._links.add(link)
        self._log.debug("zk_tcp_accepted", peer=link.peer)
        reassembler = p.TcpReassembler(on_garbage=lambda junk: self._garbage(link, junk))
        try:
            while not link.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for raw in reassembler.feed(data):
                    if link.abandoned or link.closed or "hang" in self._faults:
                        continue
                    if self._owner is not link:
                        await self._claim(link)
                    await self._serve_packet(link, raw)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a handler; ending quietly keeps asyncio's server callback
            # from logging the cancellation as an error.
            pass
        finally:
            self._release(link)
            link.close()
            self._links.discard(link)
            self._log.debug("zk_tcp_closed", peer=link.peer)

    def _udp_received(self, data: bytes, address: tuple[str, int]) -> None:
        self._udp_queue.put_nowait((data, address))

    async def _udp_worker(self) -> None:
        # One worker serialises UDP requests, so slow replies delay the next one as on
        # a real single-threaded terminal.
        while True:
            data, address = await self._udp_queue.get()
            if self._udp_endpoint is None or "hang" in self._faults:
                continue
            link = self._udp_links.get(address)
            if link is None:
                link = self._udp_links[address] = UdpLink(self._udp_endpoint, address)
                if len(self._udp_links) > 256:  # forget old peers; a busy CLI must not grow forever
                    for stale in list(self._udp_links)[:128]:
                        if self._udp_links[stale] is not self._owner:
                            del self._udp_links[stale]
            if self._owner is not None and self._owner is not link:
                self._evict_idle_owner()
            if self._owner is not None and self._owner is not link:
                self._bump(busy_rejections=1)
                self._log.debug("zk_busy_ignored", peer=link.peer)
                continue
            if self._owner is None:
                self._owner = link
                self._slot_free.clear()
            try:
                await self._serve_packet(link, data)
            finally:
                if self._owner is link and self._session is None:
                    self._release(link)

    def _garbage(self, link: Link, junk: bytes) -> None:
        self._bump(garbage_count=1)
        self._log.warning("zk_garbage_received", peer=link.peer, size=len(junk), raw=junk[:256].hex())

    # ------------------------------------------------------------------------------------
    # Requests
    # ------------------------------------------------------------------------------------

    async def _serve_packet(self, link: Link, raw: bytes) -> None:
        try:
            packet = p.parse_packet(raw)
        except p.ZkChecksumError:
            # Real terminals answer nothing to a corrupt packet: the client times out and
            # retries. Dropping it is safer than guessing which request it was.
            self._bump(bad_checksum_count=1)
            self._log.warning("zk_bad_checksum_dropped", peer=link.peer, raw=raw[:256].hex())
            return
        except p.ZkFrameError:
            self._garbage(link, raw)
            return
        self._bump(packets=1)
        session = self._session if self._session is not None and self._session.link is link else None
        if packet.command == p.CMD_ACK_OK:
            # The client acknowledging a live event; never answered.
            if session is not None:
                self._on_event_ack(session)
            return
        if session is not None:
            session.last_seen = time.monotonic()
            session.busy = True
        try:
            reply = self._dispatch(link, session, packet)
            delay = self._fault("slow_replies")
            if delay is not None:
                await asyncio.sleep(float(delay.get("delay", 2.0)))
            if link.closed or link.abandoned:
                return
            await self._transmit(link, reply)
            await link.drain()
        finally:
            if session is not None:
                session.busy = False
        if reply.after == "exit":
            self._end_session("exit")
            if isinstance(link, TcpLink):
                link.close()
            else:
                self._release(link)
        elif reply.after == "restart":
            await self._restart(silent=False, downtime=self.restart_downtime)
        current = self._session
        if current is not None and current.link is link:
            self._pump_events(current)

    async def _transmit(self, link: Link, reply: _Reply) -> None:
        packets = reply.packets
        drop = self._fault("drop_mid_transfer") if reply.bulk else None
        if drop is not None:
            keep = 1 + int(drop.get("after_packets", 2))  # PREPARE_DATA + N data packets
            packets = packets[:keep]
        units = link.wire_units(packets)
        if self._use_counted_fault("garbage_replies"):
            units = [self._rng.randbytes(len(units[0]))]
            self._log.warning("zk_sent_garbage", peer=link.peer, raw=units[0][:64].hex())
            link.send_units(units)
        elif self._use_counted_fault("truncated_replies"):
            units = [units[0][: max(1, len(units[0]) // 2)]]
            self._log.warning("zk_sent_truncated", peer=link.peer, raw=units[0][:64].hex())
            link.send_units(units)
        elif reply.bulk and isinstance(link, TcpLink):
            await self._send_paced(link, packets)
        else:
            link.send_units(units)
        if drop is not None:
            self._log.warning("zk_transfer_dropped", peer=link.peer, data_packets_sent=len(packets) - 1)
            await link.drain()
            if isinstance(link, TcpLink):
                link.close()
            else:
                self._release(link)

    async def _send_paced(self, link: TcpLink, packets: list[bytes]) -> None:
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
                await asyncio.sleep(self.tcp_packet_interval)
            if link.closed or link.abandoned:
                return
            link.send_units([piece])

    def _ack(
        self, session_id: int, packet: p.ZkPacket, data: bytes = b"", code: int = p.CMD_ACK_OK
    ) -> _Reply:
        return _Reply([p.build_packet(code, session_id, packet.reply, data)])

    def _dispatch(self, link: Link, session: _Session | None, packet: p.ZkPacket) -> _Reply:
        command = packet.command
        if command == p.CMD_CONNECT:
            return self._connect(link, packet)
        if session is None or packet.session != session.id:
            # No session on this link (or a stale one, e.g. after a restart).
            return self._ack(packet.session, packet, code=p.CMD_ACK_UNAUTH)
        sid = session.id
        if command == p.CMD_EXIT:
            return _Reply([p.build_packet(p.CMD_ACK_OK, sid, packet.reply)], after="exit")
        if command == p.CMD_AUTH:
            return self._auth(session, packet)
        if not session.authenticated:
            return self._ack(sid, packet, code=p.CMD_ACK_UNAUTH)
        handler = self._handlers.get(command)
        if handler is None:
            self._bump(unknown_commands=1)
            self._log.info("zk_unknown_command", command=command, data=packet.data[:64].hex())
            return self._ack(sid, packet, code=p.CMD_ACK_UNKNOWN)
        return handler(self, session, packet, link)

    def _connect(self, link: Link, packet: p.ZkPacket) -> _Reply:
        if self._session is not None:
            self._end_session("reconnect")
            self._owner = link
            self._slot_free.clear()
        session_id = self._session_ids.popleft() if self._session_ids else self._rng.randrange(1, 0xFFFF)
        authenticated = self.comm_key == 0
        self._session = _Session(session_id, link, authenticated, time.monotonic())
        self._bump(sessions_served=1)
        self._log.info(
            "zk_session_opened", peer=link.peer, session=f"0x{session_id:04x}", auth=not authenticated
        )
        code = p.CMD_ACK_OK if authenticated else p.CMD_ACK_UNAUTH
        return self._ack(session_id, packet, code=code)

    def _auth(self, session: _Session, packet: p.ZkPacket) -> _Reply:
        key = self.comm_key
        if key == 0 or p.comm_key_matches(packet.data, key, session.id):
            session.authenticated = True
            return self._ack(session.id, packet)
        self._bump(auth_failures=1)
        self._log.warning("zk_auth_failed", peer=session.link.peer, data=packet.data.hex())
        return self._ack(session.id, packet, code=p.CMD_ACK_UNAUTH)

    # -- command handlers (session open and authenticated) ------------------------------

    def _cmd_ok(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        return self._ack(session.id, packet)

    def _cmd_enable(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        self.enabled = True
        return self._ack(session.id, packet)

    def _cmd_disable(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        self.enabled = False
        return self._ack(session.id, packet)

    def _cmd_version(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        return self._ack(session.id, packet, self.firmware_version.encode() + b"\x00")

    def option(self, key: str) -> str | None:
        """The value the terminal gives for an OPTIONS_RRQ key, or None (ACK_ERROR)."""
        identity = {
            "~SerialNumber": self.serial_number,
            "~Platform": self.platform,
            "~DeviceName": self.device_name,
            "MAC": self.mac,
            "IPAddress": self.host,
            "NetMask": "255.255.255.0",
            "GATEIPAddress": self.host.rsplit(".", 1)[0] + ".1" if "." in self.host else "0.0.0.0",
        }
        if key in identity:
            return identity[key]
        return self._written_options.get(key, self.profile.options.get(key))

    def _cmd_options_read(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        key = p.decode_option_request(packet.data)
        value = self.option(key)
        if value is None:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        return self._ack(session.id, packet, p.encode_option_reply(key, value))

    def _cmd_options_write(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        text = packet.data.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
        key, sep, value = text.partition("=")
        if not sep or not key or key.startswith("~"):
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        self._written_options[key] = value
        return self._ack(session.id, packet)

    def free_sizes(self) -> p.FreeSizes:
        """What GET_FREE_SIZES reports now."""
        d = self.data
        records = d.record_count
        has_faces = self.profile.free_sizes_length >= 92
        return p.FreeSizes(
            users=d.user_count,
            fingers=0,
            records=records,
            oplog=d.oplog_count,
            admins=sum(1 for u in d.users if u.privilege > 0),
            passwords=sum(1 for u in d.users if u.password),
            finger_capacity=self.profile.finger_capacity,
            user_capacity=d.user_capacity,
            record_capacity=d.record_capacity,
            fingers_free=self.profile.finger_capacity,
            users_free=max(0, d.user_capacity - d.user_count),
            records_free=max(0, d.record_capacity - records),
            faces=0 if has_faces else None,
            face_capacity=self.profile.face_capacity if has_faces else None,
        )

    def _cmd_free_sizes(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        return self._ack(
            session.id, packet, p.encode_free_sizes(self.free_sizes(), self.profile.free_sizes_length)
        )

    def _data_set(self, command: int, fct: int) -> bytes | None:
        if command == p.CMD_ATTLOG_RRQ:
            short = self._fault("short_read")
            return self.data.attendance_data_set(
                missing=int(short.get("missing", 1)) if short is not None else 0
            )
        if command == p.CMD_USERTEMP_RRQ or (command == p.CMD_DB_RRQ and fct == p.FCT_USER):
            return self.data.user_data_set()
        if command == p.CMD_DB_RRQ:
            return p.encode_data_set([])  # no fingerprint templates, no operation log kept
        return None

    def _cmd_prepare_buffer(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        try:
            request = p.decode_buffer_request(packet.data)
        except p.ZkFrameError:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        data_set = self._data_set(request.command, request.fct)
        if data_set is None:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        if len(data_set) <= DIRECT_REPLY_LIMIT:
            return self._ack(session.id, packet, data_set, code=p.CMD_DATA)
        session.staged = data_set
        return self._ack(session.id, packet, p.encode_buffer_ready(len(data_set)))

    def _bulk(self, session: _Session, packet: p.ZkPacket, payload: bytes, chunk: int) -> _Reply:
        """PREPARE_DATA, then CMD_DATA chunks (session field = chunk index), then ACK_OK
        (session field = index of the last chunk), all with the request's reply number."""
        reply = packet.reply
        packets = [
            p.build_packet(p.CMD_PREPARE_DATA, session.id, reply, p.encode_prepare_data(len(payload), chunk))
        ]
        index = 0
        for index, start in enumerate(range(0, len(payload), chunk)):
            packets.append(p.build_packet(p.CMD_DATA, index, reply, payload[start : start + chunk]))
        packets.append(p.build_packet(p.CMD_ACK_OK, index, reply))
        return _Reply(packets, bulk=True)

    def _cmd_read_buffer(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        try:
            start, size = p.decode_read_buffer(packet.data)
        except p.ZkFrameError:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        staged = session.staged
        if staged is None or size == 0 or start + size > len(staged):
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        return self._bulk(session, packet, staged[start : start + size], link.chunk_size)

    def _cmd_free_data(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        session.staged = None
        return self._ack(session.id, packet)

    def _cmd_plain_read(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        data_set = self._data_set(packet.command, p.FCT_USER)
        assert data_set is not None
        return self._bulk(session, packet, data_set, link.chunk_size)

    def _cmd_user_write(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        size = self.profile.user_record_size
        if len(packet.data) != size:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        try:
            self.data.put_user(p.decode_user(packet.data, size))
        except ValueError as exc:
            self._log.info("zk_user_rejected", reason=str(exc))
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        return self._ack(session.id, packet)

    def _cmd_delete_user(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        if len(packet.data) < 2:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        (uid,) = struct.unpack_from("<H", packet.data)
        ok = self.data.delete_user(uid)
        return self._ack(session.id, packet, code=p.CMD_ACK_OK if ok else p.CMD_ACK_ERROR)

    def _cmd_clear_attlog(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        dropped = self.data.clear_log()
        self._log.info("zk_log_cleared", dropped=dropped)
        return self._ack(session.id, packet)

    def _cmd_clear_data(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        # No argument clears everything; one byte picks a table (1 log, 2 templates, 5 users).
        which = packet.data[0] if packet.data else 0
        if which not in (0, p.FCT_ATTLOG, p.FCT_FINGERTMP, p.FCT_USER):
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        if which in (0, p.FCT_ATTLOG):
            self.data.clear_log()
        if which in (0, p.FCT_USER):
            self.data.clear_users()
        self._log.info("zk_data_cleared", table=which)
        return self._ack(session.id, packet)

    def _cmd_get_time(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        return self._ack(session.id, packet, struct.pack("<I", p.encode_time(self.clock.now())))

    def _cmd_set_time(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        if len(packet.data) != 4:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        try:
            when = p.decode_time(struct.unpack("<I", packet.data)[0])
        except p.ZkFrameError:
            return self._ack(session.id, packet, code=p.CMD_ACK_ERROR)
        self.clock.set(when)
        self._log.info("zk_time_set", time=when.isoformat())
        return self._ack(session.id, packet)

    def _cmd_reg_event(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        data = packet.data.ljust(4, b"\x00")
        session.event_mask = struct.unpack_from("<I", data)[0]
        self._log.info("zk_events_registered", mask=session.event_mask)
        return self._ack(session.id, packet)

    def _cmd_restart(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        return _Reply([p.build_packet(p.CMD_ACK_OK, session.id, packet.reply)], after="restart")

    def _cmd_pin_width(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        return self._ack(session.id, packet, bytes((self.profile.pin_width,)))

    def _cmd_state(self, session: _Session, packet: p.ZkPacket, link: Link) -> _Reply:
        # The state travels in the session field: 2 = waiting for identification, 0 = idle
        # (disabled). ADRO's capture shows 2 on a working F19.
        return _Reply([p.build_packet(p.CMD_ACK_OK, 2 if self.enabled else 0, packet.reply)])

    _handlers: ClassVar[dict[int, Callable[[ZkEmulator, _Session, p.ZkPacket, Link], _Reply]]] = {
        p.CMD_ENABLEDEVICE: _cmd_enable,
        p.CMD_DISABLEDEVICE: _cmd_disable,
        p.CMD_GET_VERSION: _cmd_version,
        p.CMD_OPTIONS_RRQ: _cmd_options_read,
        p.CMD_OPTIONS_WRQ: _cmd_options_write,
        p.CMD_GET_FREE_SIZES: _cmd_free_sizes,
        p.CMD_PREPARE_BUFFER: _cmd_prepare_buffer,
        p.CMD_READ_BUFFER: _cmd_read_buffer,
        p.CMD_FREE_DATA: _cmd_free_data,
        p.CMD_ATTLOG_RRQ: _cmd_plain_read,
        p.CMD_USERTEMP_RRQ: _cmd_plain_read,
        p.CMD_USER_WRQ: _cmd_user_write,
        p.CMD_DELETE_USER: _cmd_delete_user,
        p.CMD_CLEAR_ATTLOG: _cmd_clear_attlog,
        p.CMD_CLEAR_DATA: _cmd_clear_data,
        p.CMD_GET_TIME: _cmd_get_time,
        p.CMD_SET_TIME: _cmd_set_time,
        p.CMD_REG_EVENT: _cmd_reg_event,
        p.CMD_RESTART: _cmd_restart,
        p.CMD_REFRESHDATA: _cmd_ok,
        p.CMD_STARTVERIFY: _cmd_ok,
        p.CMD_CANCELCAPTURE: _cmd_ok,
        p.CMD_UNLOCK: _cmd_ok,
        p.CMD_GET_PINWIDTH: _cmd_pin_width,
        p.CMD_STATE_RRQ: _cmd_state,
    }

    # ------------------------------------------------------------------------------------
    # Live events
    # ------------------------------------------------------------------------------------

    def _pump_events(self, session: _Session) -> None:
        """Send the next queued event if no reply is pending and the last one was acked."""
        if session.busy or session.ack_timer is not None or not session.events:
            return
        if session is not self._session or session.link.closed or session.link.abandoned:
            session.events.clear()
            return
        session.link.send([session.events.popleft()])
        self._bump(events_sent=1)
        loop = asyncio.get_running_loop()
        session.ack_timer = loop.call_later(self.event_ack_timeout, self._on_event_ack, session)

    def _on_event_ack(self, session: _Session) -> None:
        if session.ack_timer is not None:
            session.ack_timer.cancel()
            session.ack_timer = None
        self._pump_events(session)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, emulator: ZkEmulator) -> None:
        self._emulator = emulator

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._emulator._udp_received(data, addr)
