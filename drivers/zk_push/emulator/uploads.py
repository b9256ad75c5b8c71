"""An emulated push terminal's uploads: its logs posted in chunks, each stamp moved after `OK`.

`Uploader.upload` posts, for each table the server wants (TransFlag), what is newer than its
stamp, `chunk_size` lines a post, oldest first; the stamp moves to a chunk's last line only
after the server answered `OK` to it, and not at all when the log was wiped meanwhile. Before
each chunk it checks for a reboot (REBOOT, a factory reset): that ends the upload at once.
ATTLOG chunks carry the faults of their own: `garbage_lines` mixes junk (`GARBAGE_LINES`) in,
`duplicate_uploads` posts a chunk again after its `OK`. `answer_query` posts the records a
`DATA QUERY ATTLOG` command asked for, without a stamp.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from punchgate.drivers.zk_push.emulator.counters import PushCounters
from punchgate.drivers.zk_push.emulator.faults import ActiveFaults, number
from punchgate.drivers.zk_push.emulator.link import Rejected, ServerLink
from punchgate.drivers.zk_push.emulator.memory import TerminalMemory
from punchgate.drivers.zk_push.emulator.transport import NoAnswer
from punchgate.drivers.zk_push.emulator.wire import PushRecord, TransFlag

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


class Uploader:
    """Posts one terminal's logs through its `ServerLink` (see the module docstring)."""

    def __init__(
        self,
        memory: TerminalMemory,
        link: ServerLink,
        *,
        faults: ActiveFaults,
        counters: PushCounters,
        rng: random.Random,
        chunk_size: int,
        encoding: str,
        check_reboot: Callable[[], None],
    ) -> None:
        self.memory = memory
        self.link = link
        self.faults = faults
        self.counters = counters
        self.rng = rng
        self.chunk_size = chunk_size
        self.encoding = encoding
        self.check_reboot = check_reboot  # raises when the terminal is to reboot

    async def upload(self, flags: TransFlag) -> None:
        if flags.operlog:
            await self._upload_operlog()
        if flags.attlog:
            await self._upload_attlog()

    def _encode(self, lines: list[str]) -> list[bytes]:
        return [line.encode(self.encoding, "replace") for line in lines]

    async def _upload_operlog(self) -> None:
        memory = self.memory
        while True:
            self.check_reboot()
            chunk = memory.operations_after_stamp(self.chunk_size)
            if not chunk:
                return
            epoch = memory.epoch
            await self.link.post_data("OPERLOG", chunk[-1].seq, self._encode([e.text for e in chunk]))
            self.counters.lines_uploaded += len(chunk)
            if epoch == memory.epoch:
                memory.op_stamp = chunk[-1].seq

    async def _upload_attlog(self) -> None:
        memory = self.memory
        while True:
            self.check_reboot()
            chunk = memory.records_after_stamp(self.chunk_size)
            if not chunk:
                return
            lines = self._encode([r.line() for r in chunk])
            garbage = self.faults.use("garbage_lines")
            if garbage is not None:
                for n in range(int(number(garbage, "count", 3))):
                    lines.insert(self.rng.randint(0, len(lines)), GARBAGE_LINES[n % len(GARBAGE_LINES)])
            epoch = memory.epoch
            await self.link.post_data("ATTLOG", chunk[-1].seq, lines)
            self.counters.lines_uploaded += len(chunk)
            if epoch == memory.epoch:
                memory.stamp = chunk[-1].seq
            if self.faults.use("duplicate_uploads") is not None:
                await self.link.post_data("ATTLOG", chunk[-1].seq, lines)
                self.counters.duplicates += 1

    async def answer_query(self, records: list[PushRecord]) -> bool:
        """DATA QUERY ATTLOG: post these records without a Stamp; False when that failed."""
        try:
            for start in range(0, len(records), self.chunk_size):
                chunk = records[start : start + self.chunk_size]
                await self.link.post_data("ATTLOG", None, self._encode([r.line() for r in chunk]))
        except (NoAnswer, Rejected):
            return False
        return True
