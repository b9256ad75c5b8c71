"""`ZkEmulator`: one simulated ZK terminal serving the protocol over TCP and/or UDP.

This module is the public face: construction, start/stop, the state readers and the
test / CLI API (punches, users, faults). The work is done by the modules it wires
together through one `TerminalContext`:

    server          listeners, TCP streams, the UDP worker, background tasks
    session_slot    the one-session-at-a-time slot and the session in it
    request_cycle   one request from raw bytes to the reply on the wire and after
    dispatch        CONNECT / EXIT / AUTH and routing to the command handlers
    device_commands handlers for identity, options, clock, state and control
    record_commands handlers for the attendance log and the user table
    transmit        reply-spoiling faults and paced bulk transfers over TCP
    live_events     EF_ATTLOG events, one at a time, each waiting for its ACK
    active_faults / fault_effects / restart   fault bookkeeping, effects, reboots
    counters        `EmulatorCounters`

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

import datetime as dt
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.active_faults import ActiveFaults
from punchgate.drivers.zk.emulator.context import TerminalContext
from punchgate.drivers.zk.emulator.counters import CounterBook, EmulatorCounters
from punchgate.drivers.zk.emulator.device_commands import current_free_sizes, terminal_option
from punchgate.drivers.zk.emulator.fault_effects import DEAD_BATTERY_TIME, apply_fault, lift_fault
from punchgate.drivers.zk.emulator.faults import Fault
from punchgate.drivers.zk.emulator.links import Link
from punchgate.drivers.zk.emulator.live_events import announce_punch
from punchgate.drivers.zk.emulator.profiles import FirmwareProfile, Transport, get_profile
from punchgate.drivers.zk.emulator.record_commands import DIRECT_REPLY_LIMIT
from punchgate.drivers.zk.emulator.request_cycle import serve_packet
from punchgate.drivers.zk.emulator.server import TerminalServer
from punchgate.drivers.zk.emulator.session_slot import Session, SessionSlot
from punchgate.drivers.zk.emulator.state import TerminalClock, TerminalData
from punchgate.drivers.zk.protocol import AttendanceRecord, UserRecord

# DIRECT_REPLY_LIMIT and DEAD_BATTERY_TIME were defined here before the split; they stay
# importable from this module.
__all__ = ["DEAD_BATTERY_TIME", "DIRECT_REPLY_LIMIT", "EmulatorCounters", "ZkEmulator"]

log = structlog.get_logger(__name__)


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
        self.transports: frozenset[Transport] = self._check_transports(transports)
        self.name = name or serial_number
        self.host = host
        self.device_name = device_name or self.profile.device_name
        self.platform = platform or self.profile.platform
        self.firmware_version = firmware_version or self.profile.firmware_version
        self.mac = mac
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
        # Awaited before each piece of a paced transfer after its pause (`transmit.send_paced`),
        # with the connection's file descriptor. None paces by time alone, as a terminal does.
        # A test of a client that depends on that pacing (bare pyzk) sets one that waits until
        # the client has read what was sent: on a busy host the pieces then cannot pile up in
        # the client's socket, where pyzk loses its place in the stream.
        self.paced_gate: Callable[[int], Awaitable[None]] | None = None
        self.enabled = True
        self._log = log.bind(terminal=self.name)
        self._counters = CounterBook()
        self._faults = ActiveFaults()
        self._slot = SessionSlot(
            log=self._log, idle_timeout=lambda: self.session_timeout, on_session_end=self._session_ended
        )
        self._server = TerminalServer(
            self,
            slot=self._slot,
            faults=self._faults,
            counters=self._counters,
            log=self._log,
            tcp_port=tcp_port,
            udp_port=udp_port,
            on_packet=self._serve_packet,
        )
        self._ctx = TerminalContext(
            terminal=self,
            slot=self._slot,
            faults=self._faults,
            counters=self._counters,
            server=self._server,
            log=self._log,
            configured_comm_key=comm_key,
            configured_serial=serial_number,
            session_ids=deque(session_ids),
        )

    def _check_transports(self, transports: Iterable[Transport] | None) -> frozenset[Transport]:
        wanted = frozenset(transports) if transports is not None else self.profile.transports
        extra = wanted - self.profile.transports
        if extra:
            raise ValueError(
                f"profile {self.profile.name!r} speaks {', '.join(sorted(self.profile.transports))} only, "
                f"not {', '.join(sorted(extra))}"
            )
        if not wanted:
            raise ValueError("at least one transport is needed")
        return wanted

    # ------------------------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listeners (port 0 = any free port) and start serving."""
        if self._server.running:
            return
        await self._server.start()
        self._log.info(
            "zk_emulator_started",
            profile=self.profile.name,
            serial=self.serial_number,
            tcp_port=self.tcp_port,
            udp_port=self.udp_port,
            records=self.data.record_count,
            users=self.data.user_count,
            comm_key=bool(self._ctx.configured_comm_key),
        )

    async def stop(self) -> None:
        """Close listeners and every connection; no task is left behind."""
        if not self._server.running:
            return
        await self._server.stop()
        self._slot.reset()
        self._log.info("zk_emulator_stopped")

    async def __aenter__(self) -> ZkEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def tcp_port(self) -> int | None:
        """The bound TCP port, or None when TCP is off (or refused by a fault)."""
        return self._server.tcp_port

    @property
    def udp_port(self) -> int | None:
        return self._server.udp_port

    # ------------------------------------------------------------------------------------
    # State readers and the test / CLI API
    # ------------------------------------------------------------------------------------

    @property
    def serial_number(self) -> str:
        changed = self._faults.params("serial_changed")
        return str(changed["serial"]) if changed is not None else self._ctx.configured_serial

    @property
    def comm_key(self) -> int:
        changed = self._faults.params("comm_key_changed")
        return int(changed["key"]) if changed is not None else self._ctx.configured_comm_key

    @property
    def counters(self) -> EmulatorCounters:
        return self._counters.current

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
        return self._slot.session is not None

    @property
    def listening_for_punches(self) -> bool:
        """Whether the open session registered for live attendance events: a punch added now
        is announced to it at once (before that, a client only finds it on its next read)."""
        session = self._slot.session
        return session is not None and bool(session.event_mask & p.EF_ATTLOG)

    @property
    def _session(self) -> Session | None:
        """The open session (tests peek at it to wait for a registration or a busy reply)."""
        return self._slot.session

    @property
    def active_faults(self) -> dict[str, dict[str, Any]]:
        return self._faults.snapshot()

    def now(self) -> dt.datetime:
        """The terminal's clock."""
        return self.clock.now()

    def option(self, key: str) -> str | None:
        """The value the terminal gives for an OPTIONS_RRQ key, or None (ACK_ERROR)."""
        return terminal_option(self._ctx, key)

    def free_sizes(self) -> p.FreeSizes:
        """What GET_FREE_SIZES reports now."""
        return current_free_sizes(self._ctx)

    def add_user(self, user_id: str, *, name: str = "", privilege: int = 0, card: int = 0) -> UserRecord:
        return self.data.add_user(user_id, name=name, privilege=privilege, card=card)

    def generate_log(self, records: int, days: int = 30, users: int = 50, seed: int = 0) -> None:
        """Add `records` realistic punches by `users` users (created if missing) over `days`."""
        self.data.generate_log(records=records, days=days, users=users, seed=seed, end=self.clock.now())

    def copy_log_from(self, other: ZkEmulator) -> None:
        """Take `other`'s users and attendance log (a copy): see TerminalData.copy_log_from."""
        self.data.copy_log_from(other.data)

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
            self._counters.bump(punches_refused=1)
            self._log.info("zk_punch_refused", user_id=user_id, reason=refusal)
            return None
        when = (when or self.clock.now()).replace(microsecond=0)
        raw = self.data.append_record(user, when, state=state, verify=verify, work_code=work_code)
        record = p.decode_attendance(
            raw, self.data.record_size, eight_byte_variant=self.profile.eight_byte_variant
        )
        self._log.debug("zk_punch", user_id=user_id, time=when.isoformat(), state=state, verify=verify)
        announce_punch(self._ctx, user, when, verify=verify, state=state)
        return record

    async def set_fault(self, name: Fault, **params: Any) -> None:
        """Switch a fault on (see `drivers.zk.emulator.faults.Fault` for names and params)."""
        await apply_fault(self._ctx, name, params)

    async def clear_fault(self, name: Fault) -> None:
        """Switch a fault off and restore what it changed. One-shot faults need no clearing."""
        await lift_fault(self._ctx, name)

    # ------------------------------------------------------------------------------------
    # Callbacks of the parts
    # ------------------------------------------------------------------------------------

    async def _serve_packet(self, link: Link, raw: bytes) -> None:
        await serve_packet(self._ctx, link, raw)

    def _session_ended(self, session: Session, reason: str) -> None:
        if "stays_disabled" not in self._faults:
            self.enabled = True
        self._log.info("zk_session_ended", session=f"0x{session.id:04x}", reason=reason, enabled=self.enabled)
