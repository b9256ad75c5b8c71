"""An emulated ZK push terminal: the client side of the iclock / ADMS protocol 2.x.

    emulator = ZkPushEmulator("http://127.0.0.1:8081", "CKUW201960001", records=1000)
    await emulator.start()           # handshake, upload the backlog, heartbeat every Delay s
    emulator.punch("7")              # pushed at once when the server said Realtime=1
    emulator.set_fault("dead_battery")
    await emulator.stop()

The terminal obeys the handshake's option block (stamps, Delay, ErrorDelay, Realtime,
TransInterval, TransTimes, TransFlag). Its invariant is the protocol's: a stamp moves only
after the server answered `OK` to the post that carried it. Any other answer, a timeout or a
dropped connection keeps every record; the terminal waits ErrorDelay, shakes hands again
and resends from the stamp the server then reports.

This module is the public face: construction, the terminal's own state (clock, users,
punches, INFO), its faults, start/stop. The work is done by the parts it wires together:

    memory     `TerminalMemory`: clock, users, the two logs, sequences, stamps, factory reset
    session    `PushSession`: the client loop, handshake, heartbeats, commands and results
    uploads    `Uploader`: the logs posted in chunks, stamps moved after `OK`
    link       `ServerLink`: each request, counted, with the wire faults applied
    schedule   heartbeat, error and upload timing from the option block
    counters   `PushCounters`
"""

from __future__ import annotations

import asyncio
import codecs
import random
import zlib
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final
from zoneinfo import ZoneInfo

import structlog

from punchgate.drivers.zk_push.emulator.counters import PushCounters
from punchgate.drivers.zk_push.emulator.faults import (
    FAULTS,
    ONE_SHOT_FAULTS,
    ActiveFaults,
    FaultValue,
    check_fault,
)
from punchgate.drivers.zk_push.emulator.link import ServerLink
from punchgate.drivers.zk_push.emulator.memory import TerminalMemory
from punchgate.drivers.zk_push.emulator.roster import generate_backlog, generate_users
from punchgate.drivers.zk_push.emulator.session import PushSession
from punchgate.drivers.zk_push.emulator.transport import PushHttp
from punchgate.drivers.zk_push.emulator.wire import (
    TIME_FORMAT,
    OperEntry,
    PushRecord,
    PushUser,
    ServerOptions,
)

log = structlog.get_logger(__name__)

DEAD_BATTERY_TIME: Final = datetime(2000, 1, 1)


class ZkPushEmulator:
    """One emulated push terminal. `punch_rate` is in punches per second (0: none); the
    `delay`/`error_delay` overrides replace the server's Delay/ErrorDelay (for fast tests)."""

    def __init__(
        self,
        server_url: str,
        sn: str,
        *,
        records: int = 0,
        days: int = 30,
        users: int = 50,
        timezone: str = "Asia/Shanghai",
        encoding: str = "gb18030",
        realtime: bool = True,
        punch_rate: float = 0.0,
        seed: int | None = None,
        chunk_size: int = 500,
        delay: float | None = None,
        error_delay: float | None = None,
        request_timeout: float = 30.0,
        reboot_seconds: float = 30.0,
        pushver: str = "2.4.1",
        language: int = 83,
        firmware: str = "Ver 8.0.4.7-20230615",
        ip: str = "192.168.1.201",
        sync_clock: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        codecs.lookup(encoding)  # an unknown encoding fails here, not in the middle of an upload
        self.server_url = server_url
        self.sn = sn
        self.zone = ZoneInfo(timezone)
        self.encoding = encoding
        self.realtime = realtime  # used until the server's Realtime says otherwise
        self.punch_rate = punch_rate
        self.chunk_size = chunk_size
        self.delay_override = delay
        self.error_delay_override = error_delay
        self.reboot_seconds = reboot_seconds
        self.pushver = pushver
        self.language = language
        self.firmware = firmware
        self.ip = ip
        self.sync_clock = sync_clock
        self.http = PushHttp(server_url, timeout=request_timeout)
        self.counters = PushCounters()
        self.device_options: dict[str, str] = {}  # set by SET OPTION commands
        self._faults = ActiveFaults()
        self._rng = random.Random(seed)
        self._wake = asyncio.Event()
        self.memory = TerminalMemory(self.zone, self._rng, on_change=self._wake.set)
        self.link = ServerLink(
            self.http, sn=sn, encoding=encoding, faults=self._faults, counters=self.counters
        )
        self.session = PushSession(
            self,
            memory=self.memory,
            link=self.link,
            faults=self._faults,
            counters=self.counters,
            rng=self._rng,
            wake=self._wake,
        )
        self._task: asyncio.Task[None] | None = None
        self._punch_task: asyncio.Task[None] | None = None
        for user in generate_users(users, self._rng):
            self.enroll(user.pin, user.name, card=user.card)
        pins = list(self.users) or [str(n) for n in range(1, 11)]  # records of users since deleted
        for pin, when, state, verify in generate_backlog(
            records, pins=pins, days=days, now=self.now(), rng=self._rng
        ):
            self.memory.append_record(pin, when, state, verify, "0")

    # -- what it holds and what the server said ----------------------------------------------

    @property
    def records(self) -> list[PushRecord]:
        """The attendance log, oldest first."""
        return self.memory.records

    @property
    def operlog(self) -> list[OperEntry]:
        return self.memory.operlog

    @property
    def users(self) -> dict[str, PushUser]:
        return self.memory.users

    @property
    def stamp(self) -> int:
        """ATTLOG: the seq of the last record the server confirmed."""
        return self.memory.stamp

    @property
    def op_stamp(self) -> int:
        """OPERLOG: the seq of the last operation the server confirmed."""
        return self.memory.op_stamp

    @property
    def options(self) -> ServerOptions | None:
        """The last handshake's option block."""
        return self.session.options

    @property
    def online(self) -> bool:
        return self.link.online

    @property
    def last_ok_count(self) -> int | None:
        """n of the last `OK: n`."""
        return self.link.last_ok_count

    # -- the terminal's own state ------------------------------------------------------------

    def now(self) -> datetime:
        """The terminal's clock: local wall time in its zone, as set (or broken)."""
        return self.memory.now()

    def set_clock(self, when: datetime) -> None:
        self.memory.set_clock(when)

    def enroll(self, pin: str, name: str | None = None, *, card: str = "") -> PushUser:
        """Add or change a user on the keypad: the OPERLOG gets its USER line."""
        return self.memory.enroll(str(pin), name, card=card)

    def punch(
        self,
        user_id: str,
        when: datetime | None = None,
        state: int = 0,
        verify: int = 1,
        workcode: str = "0",
    ) -> PushRecord:
        """Record a punch (a user unknown to the terminal is enrolled first) and, when the
        server wants realtime pushes, wake the terminal to post it."""
        user_id = str(user_id)
        if user_id not in self.users:
            self.enroll(user_id)
        when = self.now() if when is None else self.memory.local(when)
        return self.memory.append_record(user_id, when, state, verify, workcode)

    def clear_log(self) -> None:
        """CLEAR LOG: the records go, the stamp sequence carries on."""
        self.memory.clear_log()

    def info_lines(self) -> list[str]:
        """The `Key=Value` block an INFO command answers with."""
        mac = zlib.crc32(self.sn.encode())
        return [
            "~DeviceName=ZK push emulator",
            f"~SerialNumber={self.sn}",
            f"MAC=00:17:61:{(mac >> 16) & 0xFF:02x}:{(mac >> 8) & 0xFF:02x}:{mac & 0xFF:02x}",
            f"FWVersion={self.firmware}",
            f"PushVersion=Ver {self.pushver}",
            f"IPAddress={self.ip}",
            f"UserCount={len(self.users)}",
            "FPCount=0",
            f"TransactionCount={len(self.records)}",
            f"Language={self.language}",
            f"DateTime={self.now().strftime(TIME_FORMAT)}",
        ]

    async def upload_query_answer(self, records: list[PushRecord]) -> bool:
        """DATA QUERY ATTLOG: post these records without a Stamp; False when that failed."""
        return await self.session.uploads.answer_query(records)

    # -- faults ------------------------------------------------------------------------------

    @property
    def faults(self) -> dict[str, dict[str, FaultValue]]:
        """The faults switched on, with their parameters (what is left of `times`)."""
        return self._faults.snapshot()

    def set_fault(self, name: str, **params: FaultValue) -> None:
        """Switch a fault on (see faults.py); factory_reset happens at once and stays off."""
        check_fault(name, params)
        if name == "factory_reset":
            self._factory_reset()
            return
        if name == "dead_battery" and self._faults.get(name) is None:
            self.set_clock(DEAD_BATTERY_TIME)
        self._faults.set(name, params)
        if name == "heartbeat_flood":
            self.session.next_heartbeat_at = 0.0
        log.info("zk_push_fault_on", sn=self.sn, fault=name, params=params)
        self._wake.set()

    def clear_fault(self, name: str) -> None:
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        if self._faults.clear(name):
            if name == "dead_battery":
                self.memory.clock_offset = timedelta(0)  # someone set the time after the new battery
            log.info("zk_push_fault_off", sn=self.sn, fault=name)
        self._wake.set()

    def apply_faults(self, wanted: list[tuple[str, dict[str, FaultValue]]]) -> None:
        """Make `wanted` the complete set of faults: others off, these on (one-shots fire)."""
        for name, params in wanted:
            check_fault(name, params)
        names = {name for name, _ in wanted}
        for name in self._faults.snapshot():
            if name not in names:
                self.clear_fault(name)
        for name, params in wanted:
            if name in ONE_SHOT_FAULTS or self._faults.get(name) != params:
                self.set_fault(name, **params)

    def _factory_reset(self) -> None:
        """The log is wiped, both stamps restart at 0, the OPERLOG's first line is `OPLOG 22`,
        and the terminal reboots. Users stay, so punching can go on."""
        self.memory.factory_reset()
        self.session.reboot_requested = True
        log.info("zk_push_factory_reset", sn=self.sn)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.http.open()
        self._task = asyncio.create_task(self.session.run(), name=f"zk-push {self.sn}")
        if self.punch_rate > 0:
            self._punch_task = asyncio.create_task(self._punch_forever(), name=f"zk-push punches {self.sn}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._punch_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._punch_task = None
        self.link.online = False
        await self.http.close()

    async def __aenter__(self) -> ZkPushEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _punch_forever(self) -> None:
        """Random enrolled users punch at random (Poisson) moments, `punch_rate` a second."""
        while True:
            await asyncio.sleep(self._rng.expovariate(self.punch_rate))
            pin = self._rng.choice(list(self.users)) if self.users else str(self._rng.randint(1, 50))
            record = self.punch(pin, state=self._rng.choice((0, 1)), verify=self._rng.choice((1, 1, 15, 2)))
            log.debug("zk_push_punch", sn=self.sn, user_id=pin, seq=record.seq)
