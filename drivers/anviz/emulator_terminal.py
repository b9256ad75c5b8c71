"""One simulated Anviz terminal: its records, new-record flags, clock, settings and faults.

`EmulatedTerminal` holds the state a test or `punchgate emulate anviz` sets up and changes
(punches, history, a dead clock battery, a full log) and answers one decoded request at a
time: `handle()` picks the command's handler from emulator_handlers.py and lets the faults of
emulator_faults.py damage or drop the reply. Putting terminals on a wire is emulator_servers.py.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import structlog

from punchgate.drivers.anviz.commands import ACK_REALTIME_RECORD, RET_FAILED, RET_SUCCESS
from punchgate.drivers.anviz.emulator_faults import Faults
from punchgate.drivers.anviz.emulator_handlers import HANDLERS, DownloadSession, RefusedWith
from punchgate.drivers.anviz.frames import BROADCAST_ID, CodecError, Request, Response
from punchgate.drivers.anviz.payloads import (
    CONFIG2_REALTIME_INDEX,
    DEFAULT_EPOCH,
    Record,
    seconds_since_epoch,
)
from punchgate.drivers.anviz.staff import StaffRecord

log = structlog.get_logger(__name__)


class EmulatedTerminal:
    """One Anviz terminal's state and its answers to commands. Thread-safe."""

    def __init__(
        self,
        device_id: int,
        *,
        serial_number: str = "",
        model: str = "TC400",
        firmware: str = "03.26.93",
        record_capacity: int = 50_000,
        user_capacity: int = 1_000,
        epoch: dt.datetime = DEFAULT_EPOCH,
        faults: Faults | None = None,
    ) -> None:
        self.device_id = device_id
        self.serial_number = serial_number or f"AZ{device_id:010d}"
        self.model = model
        self.firmware = firmware
        self.record_capacity = record_capacity
        self.user_capacity = user_capacity
        self.epoch = epoch
        self.faults = faults or Faults()
        self.records: list[Record] = []
        self.new_flags: list[bool] = []
        self.config2 = bytearray([1, 0, 0, 0, 0, 1, 0, 5, 0, 0, 0, 0, 0, 5, 0])
        self.clock_offset = dt.timedelta(0)
        self.requests_seen = 0
        self.pongs = 0  # host answers to our heartbeats
        self.push_listeners: list[Callable[[EmulatedTerminal, bytes], None]] = []
        self.download = DownloadSession()  # the 0x40 batch cursor
        self.staff: dict[int, StaffRecord] = {}  # enrolled users by id (0x72/0x73/0x4C)
        self.user_cursor = 0  # the 0x72 cursor
        self.restarts = 0  # 0x2E reboots asked for
        self._lock = threading.RLock()

    # ---- state a test or the CLI changes ---------------------------------------------------

    def clock(self) -> dt.datetime:
        return (dt.datetime.now() + self.clock_offset).replace(microsecond=0)

    def reset_clock(self) -> None:
        """The clock battery died: the terminal restarts at its epoch."""
        with self._lock:
            self.clock_offset = self.epoch - dt.datetime.now()

    @property
    def realtime(self) -> bool:
        return self.config2[CONFIG2_REALTIME_INDEX] == 1

    def punch(
        self,
        user_code: int,
        when: dt.datetime | None = None,
        *,
        state: int = 0,
        backup_code: int = 0x01,
        work_code: int = 0,
    ) -> Record | None:
        """Someone verified at the terminal. Returns None when the log is full (not stored)."""
        when = when or self.clock()
        record = Record(user_code, seconds_since_epoch(when, self.epoch), backup_code, state, work_code)
        with self._lock:
            if len(self.records) >= self.record_capacity:
                log.warning("emulator_log_full", device_id=self.device_id, user=user_code)
                return None
            self.records.append(record)
            self.new_flags.append(True)
            self.staff.setdefault(user_code, StaffRecord(user_id=user_code))  # one who punches is enrolled
            listeners = list(self.push_listeners) if self.realtime else []
        push = Response(self.device_id, ACK_REALTIME_RECORD, RET_SUCCESS, record.encode()).encode()
        for listener in listeners:
            listener(self, push)
        return record

    def add_history(self, count: int, *, start: dt.datetime | None = None, users: int = 20) -> None:
        """`count` old punches, one a minute from `start`, all still flagged new."""
        start = start or dt.datetime.now().replace(microsecond=0) - dt.timedelta(days=7)
        for i in range(count):
            when = start + dt.timedelta(minutes=i)
            self.punch(
                1000 + i % users, when, state=i % 2, backup_code=(0x01, 0x08, 0x04)[i % 3], work_code=i % 7
            )

    def fill_log(self, leave_free: int = 0) -> None:
        """Fill the log up to its capacity minus `leave_free` (log-full fault)."""
        missing = self.record_capacity - leave_free - len(self.records)
        if missing > 0:
            self.add_history(missing)

    @property
    def new_count(self) -> int:
        with self._lock:
            return sum(self.new_flags)

    # ---- the device side of the protocol --------------------------------------------------

    def handle(self, request: Request) -> list[bytes]:
        """The bytes this terminal puts on the line in answer to `request` (often one frame)."""
        if request.device_id not in (self.device_id, BROADCAST_ID):
            return []
        with self._lock:
            self.requests_seen += 1
            faults = self.faults
            if faults.drops_request():
                return []
            ret, data = self._answer(request)
            if faults.loses_reply(request.command):
                return []
            return faults.damage(Response(self.device_id, request.command | 0x80, ret, data).encode())

    def _answer(self, request: Request) -> tuple[int, bytes]:
        handler = HANDLERS.get(request.command)
        if handler is None:
            return RET_FAILED, b""
        try:
            return RET_SUCCESS, handler(self, request.data)
        except RefusedWith as exc:
            log.info("emulator_refused", device_id=self.device_id, command=request.command, error=str(exc))
            return exc.ret, b""
        except (CodecError, ValueError, IndexError) as exc:
            log.info("emulator_refused", device_id=self.device_id, command=request.command, error=str(exc))
            return RET_FAILED, b""
