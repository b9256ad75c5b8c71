"""What an emulated push terminal keeps in its memory: clock, users, logs and stamps.

The attendance log (`records`) and the operation log (`operlog`) are numbered by their own
sequences, which carry on when the log is cleared and restart at 0 only after a factory
reset. `stamp` / `op_stamp` are the sequence numbers of the newest record and operation the
server confirmed; uploads start after them. `epoch` counts the times the log was wiped, so an
upload in flight when that happens cannot move a stamp. Every change calls `on_change`, which
wakes the terminal to push it.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Final
from zoneinfo import ZoneInfo

from punchgate.drivers.zk_push.emulator.roster import generated_name
from punchgate.drivers.zk_push.emulator.wire import OperEntry, PushRecord, PushUser, TransFlag, oplog_line

OPLOG_FACTORY_RESET: Final = 22


@dataclass(eq=False)
class TerminalMemory:
    """One terminal's clock, users, logs, sequences and stamps (see the module docstring)."""

    zone: ZoneInfo
    rng: random.Random  # for the names of users enrolled without one
    on_change: Callable[[], None]
    users: dict[str, PushUser] = field(default_factory=dict)
    records: list[PushRecord] = field(default_factory=list)  # the attendance log, oldest first
    operlog: list[OperEntry] = field(default_factory=list)
    stamp: int = 0  # ATTLOG: the seq of the last record the server confirmed
    op_stamp: int = 0  # OPERLOG: likewise
    att_seq: int = 0
    op_seq: int = 0
    epoch: int = 0  # bumped when the log is wiped, so an upload in flight cannot set a stamp
    clock_offset: timedelta = timedelta(0)

    # -- the clock ---------------------------------------------------------------------------

    def now(self) -> datetime:
        """The terminal's clock: local wall time in its zone, as set (or broken)."""
        return datetime.now(self.zone).replace(tzinfo=None, microsecond=0) + self.clock_offset

    def set_clock(self, when: datetime) -> None:
        if when.tzinfo is not None:
            when = when.astimezone(self.zone).replace(tzinfo=None)
        self.clock_offset = when.replace(microsecond=0) - datetime.now(self.zone).replace(
            tzinfo=None, microsecond=0
        )

    def local(self, when: datetime) -> datetime:
        """`when` as the terminal's wall time (an aware time is converted to its zone)."""
        return when.astimezone(self.zone).replace(tzinfo=None) if when.tzinfo is not None else when

    # -- users and logs ----------------------------------------------------------------------

    def enroll(self, pin: str, name: str | None = None, *, card: str = "") -> PushUser:
        """Add or change a user: the OPERLOG gets its USER line."""
        user = PushUser(pin=pin, name=name or generated_name(self.rng, len(self.users)), card=card)
        self.users[pin] = user
        self.log_operation(user.line())
        return user

    def append_record(self, pin: str, when: datetime, state: int, verify: int, workcode: str) -> PushRecord:
        self.att_seq += 1
        record = PushRecord(self.att_seq, pin, when.replace(microsecond=0), state, verify, workcode)
        self.records.append(record)
        self.on_change()
        return record

    def log_operation(self, text: str) -> None:
        self.op_seq += 1
        self.operlog.append(OperEntry(self.op_seq, text))
        self.on_change()

    def clear_log(self) -> None:
        """CLEAR LOG: the records go, the stamp sequence carries on."""
        self.records.clear()
        self.epoch += 1

    def factory_reset(self) -> None:
        """Both logs wiped, sequences and stamps back to 0, the OPERLOG's first line `OPLOG 22`.
        Users stay."""
        when = self.now()
        self.records.clear()
        self.operlog.clear()
        self.att_seq = self.op_seq = 0
        self.stamp = self.op_stamp = 0
        self.epoch += 1
        self.log_operation(oplog_line(OPLOG_FACTORY_RESET, when))

    # -- what is left to upload --------------------------------------------------------------

    def has_pending(self, flags: TransFlag) -> bool:
        att = flags.attlog and bool(self.records) and self.records[-1].seq > self.stamp
        oper = flags.operlog and bool(self.operlog) and self.operlog[-1].seq > self.op_stamp
        return att or oper

    def records_after_stamp(self, limit: int) -> list[PushRecord]:
        start = bisect.bisect_right(self.records, self.stamp, key=attrgetter("seq"))
        return self.records[start : start + limit]

    def operations_after_stamp(self, limit: int) -> list[OperEntry]:
        start = bisect.bisect_right(self.operlog, self.op_stamp, key=attrgetter("seq"))
        return self.operlog[start : start + limit]

    def adopt_stamps(self, attlog: int | None, operlog: int | None) -> None:
        """After a handshake: upload from the stamps the server reported (see `adopt_stamp`)."""
        self.stamp = adopt_stamp(attlog, self.stamp, self.att_seq)
        self.op_stamp = adopt_stamp(operlog, self.op_stamp, self.op_seq)


def adopt_stamp(server: int | None, own: int, newest: int) -> int:
    """The stamp to upload from after a handshake. The server's, normally; none (`None`) means
    everything; one beyond the newest record means the log was wiped since (a factory reset),
    so the terminal keeps its own."""
    if server is None:
        return 0
    if server > newest:
        return min(own, newest)
    return server
