"""Attendance reads of the ZK driver: the whole log at once, or in parts as it arrives.

`AttendanceReader` does `ZkDriver.read_records` and `ZkDriver.read_record_chunks` for one
session: the count is checked first (`limits.check_count`) and the table capped by what the
terminal's capacity allows; the whole set must add up to the count (else
`CountMismatchError`). The chunked read decodes each chunk the pool thread hands over on the
event loop (`parsing.AttendanceStream`), so the caller can store one part while the next is
on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Final

import structlog
from zk.exception import ZKErrorResponse

from punchgate.drivers.base import RawPunch
from punchgate.drivers.packed import concat
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.client import ZkClient
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.errors import CountMismatchError
from punchgate.drivers.zk.limits import MAX_ATTENDANCE_RECORD, MAX_RECORDS, check_count, table_cap
from punchgate.drivers.zk.parsing import AttendanceStream, parse_attendance, raw_punch_from_record
from punchgate.drivers.zk.session import ZkSession

log = structlog.get_logger(__name__)


def _retrieve(task: asyncio.Future[bytes]) -> None:
    """Collect an abandoned transfer's outcome (its error is the one the abort caused)."""
    if not task.cancelled():
        task.exception()


# A terminal needs time to stage a big log before it answers, so the wait for one reply
# during a bulk read grows with the log: +1 s per 2,000 records. The whole bulk read must also
# finish within a deadline that grows with the log. Both grow only with a count that passed
# `check_count` (at most the terminal's capacity and MAX_RECORDS), never with a raw claim.
READ_SECONDS_PER_RECORD: Final = 0.0005
DEADLINE_SECONDS_PER_RECORD: Final = 0.002


class AttendanceReader:
    """The attendance log of one session's terminal (blocking parts in the session's pool)."""

    def __init__(self, session: ZkSession, config: ZkTerminal) -> None:
        self._session = session
        self.name = config.name
        self.timeout = config.timeout
        self.record_size: int | None = None  # learned on the first read
        # A terminal that refused a READ_BUFFER from an offset is read whole from then on: a
        # tail read failing at every poll would never collect its punches.
        self.tails_refused = False

    async def read_records(self, progress: Callable[[int, int], None] | None = None) -> list[RawPunch]:
        """Every attendance record on the terminal, or CountMismatchError if they do not add up.

        `progress(bytes_so_far, total_bytes)` is called from a pool thread as chunks arrive.
        """
        zk = self._session.current()
        reported, cap = await self._record_count(zk)
        if reported == 0:
            return []
        data = await self._download(zk, reported, cap, progress=progress)
        return self._decode_whole(data, reported)

    async def read_record_chunks(self) -> AsyncGenerator[Sequence[RawPunch], None]:
        """Every attendance record, handed over in log order while the transfer goes on.

        The same read as `read_records` (one pool call, the same bounds and deadline), but
        each chunk the terminal delivers is decoded on the event loop as soon as it is
        there, and yielded with whatever else arrived meanwhile, so the caller can store one
        part while the next is on the wire. Records come only from a data set that adds up
        to the reported count at a known record size (`AttendanceStream`); any other set is
        decoded whole at the end as by `read_records` (CountMismatchError, nothing yielded).
        Should the transfer fail, what arrived before is yielded first, then the error
        raised. Closed early (`aclose()`, cancellation), the transfer is aborted.
        """
        zk = self._session.current()
        reported, cap = await self._record_count(zk)
        if reported == 0:
            return
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()

        def hand_over(chunk: bytes, total: int) -> None:  # in the pool thread
            loop.call_soon_threadsafe(arrived.put_nowait, (chunk, total))

        download = asyncio.ensure_future(self._download(zk, reported, cap, on_data=hand_over))
        # The end mark follows every chunk: the thread scheduled them before it returned.
        download.add_done_callback(lambda _: arrived.put_nowait(None))
        download.add_done_callback(_retrieve)
        stream = AttendanceStream(reported)
        try:
            ended = False
            while not ended:
                items = [await arrived.get()]
                while not arrived.empty():  # a consumer slower than the wire takes them together
                    items.append(arrived.get_nowait())
                parts: list[Sequence[RawPunch]] = []
                for item in items:
                    if item is None:
                        ended = True
                        break
                    parts.append(stream.feed(*item))
                records = concat(parts)  # still packed: decoded only where read
                if records:
                    yield records
            data = download.result()  # the transfer's error, after what arrived before it
        finally:
            if not download.done():  # closed early: the pool thread must not read on
                self._session.abort()
                download.cancel()
                # Let the call see its cancellation now (it aborts the session's current
                # client): later, it could hit the client of the next connect.
                await asyncio.wait({download})
        if stream.size is None:
            yield self._decode_whole(data, reported)
            return
        if stream.decoded != reported:  # cannot happen once the sizes agreed; never pass it silently
            raise CountMismatchError(
                f"terminal reports {reported} records, the data set held {stream.decoded}",
                device=self.name,
                reported=reported,
                records=[],
            )
        self.record_size = stream.size
        if stream.invalid:
            # Counted among the records decoded: a stored prefix matched by its bytes is not.
            log.warning("zk_records_with_invalid_dates", device=self.name, count=stream.invalid)

    async def read_records_from(self, first: int, record_size: int) -> list[RawPunch] | None:
        """The records from index `first` to the end of the log (a tail read: READ_BUFFER from
        that record's offset, `ZkClient.read_table_from`), `record_size` bytes each (as the
        caller's stored records were), or None when this cannot be done safely and the caller
        must read the whole log: a whole read of this session's terminal showed another size,
        the size is 8 (two layouts, told apart on a whole log) or not one ZK uses, the log
        holds no record at `first`, or the set does not add up to the count at that size."""
        if not self.tail_possible(first, record_size):
            return None
        zk = self._session.current()
        got = await self._session.run(
            f"read records from {first}",
            lambda: self.tail_download(zk, first, record_size),
            deadline=self.tail_deadline(first),
        )
        return self.tail_records(got, record_size)

    def tail_possible(self, first: int, size: int) -> bool:
        """Whether a tail read from `first` of `size`-byte records may be tried (see above)."""
        if self.tails_refused or first < 0:
            return False
        return self.record_size in (None, size) and size != 8 and size in zp.ATTENDANCE_RECORD_SIZES

    def tail_deadline(self, first: int) -> float:
        """The terminal stages the whole log (about `first` records, more if it grew a lot)."""
        return self.timeout * 3 + 5 + (2 * first + 10_000) * DEADLINE_SECONDS_PER_RECORD

    def tail_download(
        self, zk: ZkClient, first: int, size: int, sizes: zp.FreeSizes | None = None
    ) -> bytes | None:
        """The tail's bytes (blocking, in the pool), or None: see `read_records_from`. `sizes`:
        the counts just asked in the same pool call (`ZkDriver.info_then_tail`)."""
        sizes = sizes or zk.free_sizes()
        reported = check_count("records", sizes.records, sizes.record_capacity, MAX_RECORDS)
        if first >= reported:
            return None
        cap = table_cap(sizes.record_capacity, MAX_RECORDS, MAX_ATTENDANCE_RECORD)
        # The terminal stages the whole log before it answers, whatever part is read.
        zk.set_timeout(self.timeout + reported * READ_SECONDS_PER_RECORD)
        try:
            data, total = zk.read_table_from(zp.CMD_ATTLOG_RRQ, 0, cap, 4 + first * size)
        except ZKErrorResponse as exc:  # refused in a reply of its own: still in step
            self.tails_refused = True
            log.warning("zk_tail_read_refused", device=self.name, error=str(exc))
            with contextlib.suppress(Exception):
                zk.free_data()
            return None
        finally:
            zk.set_timeout(self.timeout)
        if total != 4 + reported * size or len(data) != (reported - first) * size:
            return None  # not the layout we know: the whole read decides, with diagnostics
        return data

    @staticmethod
    def tail_records(data: bytes | None, size: int) -> list[RawPunch] | None:
        if data is None:
            return None
        records = [zp.decode_attendance(data[i : i + size], size) for i in range(0, len(data), size)]
        return [raw_punch_from_record(r) for r in records]

    async def _record_count(self, zk: ZkClient) -> tuple[int, int]:
        """The record count the terminal reports (checked) and the most bytes its log may take."""

        def count() -> tuple[int, int]:
            sizes = zk.free_sizes()
            records = check_count("records", sizes.records, sizes.record_capacity, MAX_RECORDS)
            return records, sizes.record_capacity

        reported, capacity = await self._session.run("read record count", count)
        return reported, table_cap(capacity, MAX_RECORDS, MAX_ATTENDANCE_RECORD)

    async def _download(
        self,
        zk: ZkClient,
        reported: int,
        cap: int,
        *,
        progress: Callable[[int, int], None] | None = None,
        on_data: Callable[[bytes, int], None] | None = None,
    ) -> bytes:
        """The attendance data set, in one pool call whose waits and deadline grow with the log."""

        def download() -> bytes:
            zk.set_timeout(self.timeout + reported * READ_SECONDS_PER_RECORD)
            zk.on_chunk = progress
            try:
                return zk.read_table(zp.CMD_ATTLOG_RRQ, 0, cap, on_data)
            finally:
                zk.on_chunk = None
                zk.set_timeout(self.timeout)

        deadline = self.timeout * 3 + 5 + reported * DEADLINE_SECONDS_PER_RECORD
        return await self._session.run(f"read {reported} records", download, deadline=deadline)

    def _decode_whole(self, data: bytes, reported: int) -> list[RawPunch]:
        """A whole data set's records, or CountMismatchError when they do not add up."""
        parsed = parse_attendance(data, reported, size_hint=self.record_size)
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
        self.record_size = parsed.record_size
        return raws
