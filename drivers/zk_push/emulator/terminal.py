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
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import contextlib
import math
import random
import zlib
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from email.utils import parsedate_to_datetime
from operator import attrgetter
from types import TracebackType
from typing import Final
from zoneinfo import ZoneInfo

import structlog

from punchgate.drivers.zk_push.emulator.commands import execute
from punchgate.drivers.zk_push.emulator.faults import (
    FAULTS,
    ONE_SHOT_FAULTS,
    ActiveFaults,
    FaultValue,
    check_fault,
    number,
)
from punchgate.drivers.zk_push.emulator.roster import generate_backlog, generate_users, generated_name
from punchgate.drivers.zk_push.emulator.transport import NoAnswer, Params, PushHttp, Reply
from punchgate.drivers.zk_push.emulator.wire import (
    TIME_FORMAT,
    Command,
    OperEntry,
    PushRecord,
    PushUser,
    ServerOptions,
    TransFlag,
    oplog_line,
    parse_commands,
    parse_ok_count,
    parse_options,
)

log = structlog.get_logger(__name__)

DEAD_BATTERY_TIME: Final = datetime(2000, 1, 1)
OPLOG_FACTORY_RESET: Final = 22

# Junk an ATTLOG body may carry (garbage_lines): bytes invalid in GB18030 and UTF-8, an
# impossible date, commas instead of TABs, too few fields, a bare word.
GARBAGE_LINES: Final[tuple[bytes, ...]] = (
    b"\xff\xfe\x80\x81garbage\x00\x01",
    b"12\t2026-13-45 25:61:61\t0\t1\t0\t0\t0",
    b"7,2026-01-01 08:00:00,0,1,0,0,0",
    b"\t\t\t",
    b"NOT-A-RECORD",
    b"99999999999999999999999\tyesterday\tX\tY",
)


@dataclass(slots=True)
class PushCounters:
    handshakes: int = 0  # option blocks received
    heartbeats: int = 0  # getrequest polls sent
    uploads: int = 0  # data posts (ATTLOG/OPERLOG) answered OK
    lines_uploaded: int = 0  # record lines in those posts (duplicates and garbage excluded)
    rejected: int = 0  # requests answered with anything but success (non-200, no OK)
    failures: int = 0  # requests with no answer: refused, dropped, timed out
    retries: int = 0  # times the terminal waited ErrorDelay and started over
    duplicates: int = 0  # chunks posted again after their OK (duplicate_uploads)
    commands: int = 0  # server commands executed
    reboots: int = 0


class _Rejected(Exception):
    """The server answered, but not with success: keep everything, retry after ErrorDelay."""


class _Reboot(Exception):
    """REBOOT or a factory reset: stop, stay down a while, start over with a handshake."""


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
        self.options: ServerOptions | None = None  # the last handshake's option block
        self.device_options: dict[str, str] = {}  # set by SET OPTION commands
        self.online = False
        self.last_ok_count: int | None = None  # n of the last `OK: n`
        self.stamp = 0  # ATTLOG: the seq of the last record the server confirmed
        self.op_stamp = 0  # OPERLOG: likewise
        self.records: list[PushRecord] = []  # the attendance log, oldest first
        self.operlog: list[OperEntry] = []
        self.users: dict[str, PushUser] = {}
        self._faults = ActiveFaults()
        self._rng = random.Random(seed)
        self._clock_offset = timedelta(0)
        self._att_seq = 0
        self._op_seq = 0
        self._epoch = 0  # bumped when the log is wiped, so an upload in flight cannot set a stamp
        self._wake = asyncio.Event()
        self._handshaken = False
        self._upload_due = False
        self._reboot_requested = False
        self._send_info = False
        self._next_heartbeat_at = 0.0
        self._next_upload_at = math.inf
        self._pending_results: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._punch_task: asyncio.Task[None] | None = None
        for user in generate_users(users, self._rng):
            self.enroll(user.pin, user.name, card=user.card)
        pins = list(self.users) or [str(n) for n in range(1, 11)]  # records of users since deleted
        for pin, when, state, verify in generate_backlog(
            records, pins=pins, days=days, now=self.now(), rng=self._rng
        ):
            self._append_record(pin, when, state, verify, "0")

    # -- the terminal's own state ------------------------------------------------------------

    def now(self) -> datetime:
        """The terminal's clock: local wall time in its zone, as set (or broken)."""
        return datetime.now(self.zone).replace(tzinfo=None, microsecond=0) + self._clock_offset

    def set_clock(self, when: datetime) -> None:
        if when.tzinfo is not None:
            when = when.astimezone(self.zone).replace(tzinfo=None)
        self._clock_offset = when.replace(microsecond=0) - datetime.now(self.zone).replace(
            tzinfo=None, microsecond=0
        )

    def enroll(self, pin: str, name: str | None = None, *, card: str = "") -> PushUser:
        """Add or change a user on the keypad: the OPERLOG gets its USER line."""
        pin = str(pin)
        user = PushUser(pin=pin, name=name or generated_name(self._rng, len(self.users)), card=card)
        self.users[pin] = user
        self._log_oper(user.line())
        return user

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
        if when is None:
            when = self.now()
        elif when.tzinfo is not None:
            when = when.astimezone(self.zone).replace(tzinfo=None)
        return self._append_record(user_id, when, state, verify, workcode)

    def clear_log(self) -> None:
        """CLEAR LOG: the records go, the stamp sequence carries on."""
        self.records.clear()
        self._epoch += 1

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

    def _append_record(self, pin: str, when: datetime, state: int, verify: int, workcode: str) -> PushRecord:
        self._att_seq += 1
        record = PushRecord(self._att_seq, pin, when.replace(microsecond=0), state, verify, workcode)
        self.records.append(record)
        self._wake.set()
        return record

    def _log_oper(self, text: str) -> None:
        self._op_seq += 1
        self.operlog.append(OperEntry(self._op_seq, text))
        self._wake.set()

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
            self._next_heartbeat_at = 0.0
        log.info("zk_push_fault_on", sn=self.sn, fault=name, params=params)
        self._wake.set()

    def clear_fault(self, name: str) -> None:
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        if self._faults.clear(name):
            if name == "dead_battery":
                self._clock_offset = timedelta(0)  # someone set the time after the new battery
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
        when = self.now()
        self.records.clear()
        self.operlog.clear()
        self._att_seq = self._op_seq = 0
        self.stamp = self.op_stamp = 0
        self._epoch += 1
        self._log_oper(oplog_line(OPLOG_FACTORY_RESET, when))
        self._reboot_requested = True
        log.info("zk_push_factory_reset", sn=self.sn)

    def _wire_sn(self) -> str:
        wrong = self._faults.get("wrong_sn")
        return self.sn if wrong is None else str(wrong.get("sn", self.sn + "X"))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.http.open()
        self._task = asyncio.create_task(self._run(), name=f"zk-push {self.sn}")
        if self.punch_rate > 0:
            self._punch_task = asyncio.create_task(self._punch_forever(), name=f"zk-push punches {self.sn}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._punch_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._punch_task = None
        self.online = False
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

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("zk_push_emulator_crashed", sn=self.sn)
            raise

    async def _loop(self) -> None:
        while True:
            try:
                await self._cycle()
            except (NoAnswer, _Rejected) as exc:
                self.online = False
                self._handshaken = False
                self.counters.retries += 1
                wait = self._error_delay()
                log.info("zk_push_retry", sn=self.sn, reason=str(exc), after_s=wait)
                await asyncio.sleep(wait)
            except _Reboot:
                self.online = False
                self._handshaken = False
                self._reboot_requested = False
                self.counters.reboots += 1
                log.info("zk_push_reboot", sn=self.sn, down_s=self.reboot_seconds)
                await asyncio.sleep(self.reboot_seconds)

    async def _cycle(self) -> None:
        self._wake.clear()
        self._check_reboot()
        if not self._handshaken:
            await self._handshake()
        if self._should_upload():
            self._upload_due = False
            await self._upload_all()
            self._next_upload_at = self._next_scheduled_upload()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_heartbeat_at:
            self._next_heartbeat_at = loop.time() + self._heartbeat_interval()
            await self._heartbeat()
        if self._upload_due or self._reboot_requested or not self._handshaken:
            return
        wake_at = self._next_heartbeat_at
        if not self._realtime():
            wake_at = min(wake_at, self._next_upload_at)
        timeout = wake_at - loop.time()
        if timeout > 0:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel (stop()) that
            # arrives in the same tick as the wake-up, and the terminal would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _check_reboot(self) -> None:
        if self._reboot_requested:
            raise _Reboot

    # -- what the server said ----------------------------------------------------------------

    def _realtime(self) -> bool:
        if self.options is not None and self.options.realtime is not None:
            return self.options.realtime
        return self.realtime

    def _trans_flag(self) -> TransFlag:
        return self.options.trans_flag if self.options is not None else TransFlag()

    def _heartbeat_interval(self) -> float:
        flood = self._faults.get("heartbeat_flood")
        if flood is not None:
            return number(flood, "interval", 0.01)
        if self.delay_override is not None:
            return self.delay_override
        return self.options.delay if self.options is not None else 30.0

    def _error_delay(self) -> float:
        if self.error_delay_override is not None:
            return self.error_delay_override
        return self.options.error_delay if self.options is not None else 30.0

    def _next_scheduled_upload(self) -> float:
        """When a terminal without realtime pushes looks for new records next (loop time)."""
        if self.options is None:
            return math.inf
        loop_now = asyncio.get_running_loop().time()
        candidates = [math.inf]
        if self.options.trans_interval_minutes > 0:
            candidates.append(loop_now + self.options.trans_interval_minutes * 60)
        if self.options.trans_times:
            candidates.append(loop_now + _seconds_until(self.options.trans_times, self.now()))
        return min(candidates)

    def _should_upload(self) -> bool:
        if self._upload_due:
            return True
        if not self._has_pending():
            return False
        return self._realtime() or asyncio.get_running_loop().time() >= self._next_upload_at

    def _has_pending(self) -> bool:
        flags = self._trans_flag()
        att = flags.attlog and bool(self.records) and self.records[-1].seq > self.stamp
        oper = flags.operlog and bool(self.operlog) and self.operlog[-1].seq > self.op_stamp
        return att or oper

    # -- requests ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        params: Params,
        body: bytes | None = None,
        *,
        trickle: tuple[int, float] | None = None,
    ) -> Reply:
        try:
            reply = await self.http.request(method, path, params, body, trickle=trickle)
        except NoAnswer:
            self.counters.failures += 1
            raise
        log.debug("zk_push_request", sn=self.sn, method=method, path=path, status=reply.status)
        return reply

    def _reject(self, what: str, reply: Reply) -> _Rejected:
        self.counters.rejected += 1
        return _Rejected(f"{what}: HTTP {reply.status} {reply.text(self.encoding)[:60]!r}")

    async def _handshake(self) -> None:
        params = [
            ("SN", self._wire_sn()),
            ("options", "all"),
            ("pushver", self.pushver),
            ("language", str(self.language)),
        ]
        reply = await self._request("GET", "/iclock/cdata", params)
        if reply.status != 200:
            raise self._reject("handshake", reply)
        self.options = options = parse_options(reply.text(self.encoding))
        self.stamp = _adopt(options.attlog_stamp, self.stamp, self._att_seq)
        self.op_stamp = _adopt(options.operlog_stamp, self.op_stamp, self._op_seq)
        if self.sync_clock and "Date" in reply.headers:
            with contextlib.suppress(TypeError, ValueError):
                self.set_clock(parsedate_to_datetime(reply.headers["Date"]))
        self._handshaken = self.online = True
        self._send_info = True
        self._upload_due = True  # whatever is newer than the stamps goes now
        self._next_heartbeat_at = 0.0
        self.counters.handshakes += 1
        log.info("zk_push_handshake", sn=self.sn, stamp=self.stamp, op_stamp=self.op_stamp)

    async def _heartbeat(self) -> None:
        params = [("SN", self._wire_sn())]
        if self._send_info:
            info = f"{self.firmware},{len(self.users)},0,{len(self.records)},{self.ip},10,0,0,0,100"
            params.append(("INFO", info))
        self.counters.heartbeats += 1
        reply = await self._request("GET", "/iclock/getrequest", params)
        if reply.status != 200:
            raise self._reject("getrequest", reply)
        self._send_info = False
        self.online = True
        commands = parse_commands(reply.text(self.encoding))
        if commands:
            await self._run_commands(commands)
        elif self._pending_results:
            await self._post_results()

    async def _run_commands(self, commands: list[Command]) -> None:
        """Run an answer's commands in order (nothing after REBOOT), post their results, then
        act on what they asked for."""
        effects: set[str] = set()
        for command in commands:
            outcome = await execute(self, command)
            self.counters.commands += 1
            self._pending_results.append(outcome.result(command))
            log.info("zk_push_command", sn=self.sn, id=command.id, command=command.name, code=outcome.code)
            if outcome.effect is not None:
                effects.add(outcome.effect)
            if outcome.effect == "reboot":
                break
        await self._post_results()
        if "upload" in effects:
            self._upload_due = True
        if "handshake" in effects:
            self._handshaken = False
        if "reboot" in effects:
            self._reboot_requested = True

    async def _post_results(self) -> None:
        """Post pending results: plain ones together, one per line; INFO's block alone."""
        bodies: list[list[str]] = []
        for result in self._pending_results:
            if "\n" in result or not bodies or any("\n" in r for r in bodies[-1]):
                bodies.append([result])
            else:
                bodies[-1].append(result)
        for batch in bodies:
            body = "\n".join(batch).encode(self.encoding, "replace")
            reply = await self._request("POST", "/iclock/devicecmd", [("SN", self._wire_sn())], body)
            if reply.status != 200:
                raise self._reject("devicecmd", reply)
            del self._pending_results[: len(batch)]

    # -- uploads -----------------------------------------------------------------------------

    async def _upload_all(self) -> None:
        flags = self._trans_flag()
        if flags.operlog:
            await self._upload_operlog()
        if flags.attlog:
            await self._upload_attlog()

    def _encode(self, lines: list[str]) -> list[bytes]:
        return [line.encode(self.encoding, "replace") for line in lines]

    async def _upload_operlog(self) -> None:
        while True:
            self._check_reboot()
            start = bisect.bisect_right(self.operlog, self.op_stamp, key=attrgetter("seq"))
            chunk = self.operlog[start : start + self.chunk_size]
            if not chunk:
                return
            epoch = self._epoch
            await self._post_data("OPERLOG", chunk[-1].seq, self._encode([e.text for e in chunk]))
            self.counters.lines_uploaded += len(chunk)
            if epoch == self._epoch:
                self.op_stamp = chunk[-1].seq

    async def _upload_attlog(self) -> None:
        while True:
            self._check_reboot()
            start = bisect.bisect_right(self.records, self.stamp, key=attrgetter("seq"))
            chunk = self.records[start : start + self.chunk_size]
            if not chunk:
                return
            lines = self._encode([r.line() for r in chunk])
            garbage = self._faults.use("garbage_lines")
            if garbage is not None:
                for n in range(int(number(garbage, "count", 3))):
                    lines.insert(self._rng.randint(0, len(lines)), GARBAGE_LINES[n % len(GARBAGE_LINES)])
            epoch = self._epoch
            await self._post_data("ATTLOG", chunk[-1].seq, lines)
            self.counters.lines_uploaded += len(chunk)
            if epoch == self._epoch:
                self.stamp = chunk[-1].seq
            if self._faults.use("duplicate_uploads") is not None:
                await self._post_data("ATTLOG", chunk[-1].seq, lines)
                self.counters.duplicates += 1

    async def upload_query_answer(self, records: list[PushRecord]) -> bool:
        """DATA QUERY ATTLOG: post these records without a Stamp; False when that failed."""
        try:
            for start in range(0, len(records), self.chunk_size):
                chunk = records[start : start + self.chunk_size]
                await self._post_data("ATTLOG", None, self._encode([r.line() for r in chunk]))
        except (NoAnswer, _Rejected):
            return False
        return True

    async def _post_data(self, table: str, stamp: int | None, lines: list[bytes]) -> None:
        """POST cdata?table=…&Stamp=…; returns only when the server answered `OK`."""
        params = [("SN", self._wire_sn()), ("table", table)]
        if stamp is not None:
            params.append(("Stamp", str(stamp)))
        body = b"\n".join(lines) + b"\n"
        drop = self._faults.use("drop_mid_post")
        if drop is not None:
            self.counters.failures += 1
            await self.http.post_and_drop(
                "/iclock/cdata", params, body, int(number(drop, "after_bytes", len(body) // 2))
            )
        slow = self._faults.use("slow_posts")
        trickle = None
        if slow is not None:
            trickle = (int(number(slow, "chunk_bytes", 16)), number(slow, "interval", 0.05))
        reply = await self._request("POST", "/iclock/cdata", params, body, trickle=trickle)
        if reply.status != 200:
            raise self._reject(f"{table} post", reply)
        try:
            self.last_ok_count = parse_ok_count(reply.text(self.encoding))
        except ValueError:
            raise self._reject(f"{table} post", reply) from None
        self.counters.uploads += 1
        self.online = True


def _adopt(server: int | None, own: int, newest: int) -> int:
    """The stamp to upload from after a handshake. The server's, normally; none (`None`) means
    everything; one beyond the newest record means the log was wiped since (a factory reset),
    so the terminal keeps its own."""
    if server is None:
        return 0
    if server > newest:
        return min(own, newest)
    return server


def _seconds_until(times: tuple[time, ...], now: datetime) -> float:
    """Seconds from `now` to the next of the daily `times`."""
    waits = []
    for moment in times:
        at = datetime.combine(now.date(), moment)
        if at <= now:
            at += timedelta(days=1)
        waits.append((at - now).total_seconds())
    return min(waits)
