"""The ZK terminal driver: `punchgate.drivers.base.Driver` for ZKTeco-style terminals, over pyzk 0.9.

`ZkDriver` composes the parts, each in its own module:

* `session`      the connection (connect, close, one terminal per address) and the bounded
                 thread pool every blocking pyzk call runs in, with deadlines;
* `client`       the queries it sends (sizes, options, clock, tables), through the codec;
* `attendance`   the attendance log, read whole or handed over in parts as it arrives;
* `pyzk_patches` pyzk's `ZK` with its known bugs worked around (the only code touching
                 pyzk's private state); `bulk_read` bounds and frames its bulk transfers;
* `link`         the session's socket: every read bounded in time, in bytes and by abort;
* `limits`       the counts and sizes the driver accepts, whatever a terminal claims;
* `parsing`      attendance, users and device info decoded from what the terminal sent;
* `errors`       pyzk and socket errors mapped onto the driver's errors and fault codes;
* `live`         real-time punches, read by asyncio without holding a pool thread.

What stays here is the Driver interface and the rules that span those parts: a count must be
possible for the terminal (`limits.check_count`) before a table is read, and the table may
not exceed the cap its capacity allows; a full read must add up to the count the terminal
reports (else `CountMismatchError`); a clear goes ahead only while the count is what the
caller stored; and a live stream on a 16-byte-log terminal learns the user ids first.

The names tests and benchmarks import from this module (`raw_punch_from_record`,
`configure_pool`, the error classes, ...) are re-exported from their modules.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

import structlog

from punchgate.drivers.base import (
    CommandRefusedError,
    DeviceInfo,
    DriverError,
    ProtocolError,
    RawPunch,
    TailOutcome,
    TerminalUser,
    UsersChanged,
)
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.attendance import AttendanceReader
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.errors import ClearRefusedError, CountMismatchError, map_error
from punchgate.drivers.zk.limits import (
    MAX_USER_RECORD,
    MAX_USERS,
    check_count,
    table_cap,
)
from punchgate.drivers.zk.live import LiveChannel
from punchgate.drivers.zk.parsing import (
    INVALID_TIME_EPOCH,
    detect_eight_byte_variant,
    device_info,
    invalid_time_sentinel,
    parse_attendance,
    parse_users,
    raw_punch_from_record,
)
from punchgate.drivers.zk.pyzk_patches import PatchedZK
from punchgate.drivers.zk.session import DEFAULT_POOL_SIZE, ZkSession, configure_pool
from punchgate.drivers.zk.users import plan_upsert, to_terminal_user

__all__ = [
    "DEFAULT_POOL_SIZE",
    "INVALID_TIME_EPOCH",
    "ClearRefusedError",
    "CountMismatchError",
    "PatchedZK",
    "ZkDriver",
    "configure_pool",
    "detect_eight_byte_variant",
    "invalid_time_sentinel",
    "map_error",
    "parse_attendance",
    "parse_users",
    "raw_punch_from_record",
]

log = structlog.get_logger(__name__)


class ZkDriver:
    """One ZK terminal (one connection), behind the common async driver interface."""

    def __init__(self, config: ZkTerminal) -> None:
        self.config = config
        self.name = config.name
        self.encoding = config.encoding
        self.timeout = config.timeout
        self._session = ZkSession(config)
        self._live = LiveChannel(self._session)
        self._attendance = AttendanceReader(self._session, config)

    @property
    def garbage_frames(self) -> int:
        """Frames that failed to decode (logged with hex)."""
        return self._live.garbage_frames

    @property
    def dropped_events(self) -> int:
        """Live events that could not be decoded."""
        return self._live.dropped_events

    async def connect(self) -> None:
        await self._session.open()

    async def close(self) -> None:
        """End the session: re-enable the terminal and say goodbye, then close the socket."""
        await self._session.close()

    async def info(self) -> DeviceInfo:
        zk = self._session.current()
        transport = self.config.transport
        return await self._session.run("info", lambda: device_info(zk.info_answers(), transport=transport))

    async def info_then_tail(
        self, tail_from: Callable[[DeviceInfo], int | None], record_size: int, *, first_hint: int
    ) -> tuple[DeviceInfo, TailOutcome | None]:
        """`info()`, then in the same pool call the tail read `tail_from(info)` asks for (the
        index to read from, or None for none), of `record_size`-byte records. A polled terminal
        at a factory's rate needs both at nearly every poll: one thread hop instead of two, and
        the contact's counts serve the tail (one round trip fewer). The tail is `None` when not
        tried; its records are None when only a whole read can say (`read_records_from`).
        `first_hint`: about where the tail starts, for the deadline."""
        zk = self._session.current()
        transport = self.config.transport
        reader = self._attendance

        contacted: list[DeviceInfo] = []  # the contact's answer, should the tail read fail
        tail_at: list[int] = []

        def contact_then_tail() -> tuple[DeviceInfo, bytes | None]:
            answers = zk.info_answers()
            info = device_info(answers, transport=transport)
            contacted.append(info)
            first = tail_from(info)
            if first is None or not reader.tail_possible(first, record_size):
                return info, None
            tail_at.append(first)
            return info, reader.tail_download(zk, first, record_size, answers.sizes)

        deadline = self.timeout * 3 + 5 + reader.tail_deadline(max(0, first_hint))
        try:
            info, data = await self._session.run("info and new records", contact_then_tail, deadline=deadline)
        except DriverError as exc:
            if not tail_at:
                raise  # the contact failed, as `info()` would have
            # The contact was answered: the caller reports it, then the tail read's failure.
            return contacted[0], TailOutcome(tail_at[0], None, failed=exc)
        if not tail_at:
            return info, None
        first = tail_at[0]
        return info, TailOutcome(first, reader.tail_records(data, record_size))

    async def read_records(self, progress: Callable[[int, int], None] | None = None) -> list[RawPunch]:
        """Every attendance record on the terminal, or CountMismatchError if they do not add up.

        `progress(bytes_so_far, total_bytes)` is called from a pool thread as chunks arrive.
        """
        return await self._attendance.read_records(progress)

    async def read_records_from(self, first: int, record_size: int) -> list[RawPunch] | None:
        """The records from index `first` to the end of the log, or None when the whole log
        must be read instead (`AttendanceReader.read_records_from`)."""
        return await self._attendance.read_records_from(first, record_size)

    def read_record_chunks(self) -> AsyncGenerator[Sequence[RawPunch], None]:
        """Every attendance record, in log order, in parts as the transfer delivers them
        (`AttendanceReader.read_record_chunks`)."""
        return self._attendance.read_record_chunks()

    async def read_users(self) -> list[zp.UserRecord]:
        """Enrolled users, names decoded with the terminal's configured encoding."""
        zk = self._session.current()

        def download() -> list[zp.UserRecord]:
            sizes = zk.free_sizes()
            reported = check_count("users", sizes.users, sizes.user_capacity, MAX_USERS)
            if reported == 0:
                return []
            cap = table_cap(sizes.user_capacity, MAX_USERS, MAX_USER_RECORD)
            data = zk.read_table(zp.CMD_USERTEMP_RRQ, zp.FCT_USER, cap)
            try:
                return parse_users(data, reported, self.encoding)
            except zp.ZkFrameError as exc:
                raise ProtocolError(f"user table: {exc}", device=self.name) from exc

        users = await self._session.run("read users", download)
        if self.config.live:
            # Only a live stream needs the map (its short events carry the internal uid); a
            # polled terminal's roster read would otherwise keep every user's id in memory
            # for good (a fifth of what a polled terminal costs in a 5,000-terminal gateway).
            self._live.user_ids = {u.uid: u.user_id for u in users}
        return users

    async def set_time(self, when: dt.datetime) -> None:
        zk = self._session.current()
        await self._session.run("set time", lambda: zk.write_clock(when.replace(tzinfo=None, microsecond=0)))
        log.info("zk_clock_set", device=self.name, to=when.isoformat())

    async def clear_records(self, expected_count: int) -> None:
        """Clear the log, but only if it still holds exactly `expected_count` records.

        The terminal is disabled first so no punch can arrive between the count check and
        the clear, and re-enabled in a finally whatever happens. Uses CLEAR_ATTLOG (15),
        never CLEAR_DATA, which would also erase users and fingerprints.
        """
        zk = self._session.current()

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

        left = await self._session.run("clear records", guarded_clear)
        if left:
            raise ProtocolError(f"terminal still reports {left} records after clearing", device=self.name)
        log.info("zk_log_cleared", device=self.name, records=expected_count)

    # --- remote commands (punchgate.drivers.base.Administered; gateway/commands) -----------------
    cannot: Mapping[str, str] = {}  # the ZK protocol has every command remote commands use

    async def restart(self) -> None:
        """CMD_RESTART. The terminal reboots, so the session is over: it is closed without the
        goodbye (nothing would answer it), and the worker connects again."""
        zk = self._session.current()
        if not await self._session.run("restart", zk.reboot):
            raise CommandRefusedError("the terminal refused CMD_RESTART", device=self.name)
        self._session.desynced = True  # nothing left to talk to: close() only closes the socket
        log.info("zk_restarted", device=self.name)

    async def set_enabled(self, enabled: bool) -> None:
        """Enable or disable the terminal (disabled, it refuses punches). The driver re-enables
        it whenever it closes a session, so a disable holds while the gateway stays connected."""
        zk = self._session.current()
        if not await self._session.run("enable" if enabled else "disable", lambda: zk.set_enabled(enabled)):
            raise CommandRefusedError(
                f"the terminal refused to {'enable' if enabled else 'disable'}", device=self.name
            )
        log.info("zk_enabled" if enabled else "zk_disabled", device=self.name)

    async def list_users(self) -> list[TerminalUser]:
        return [to_terminal_user(record) for record in await self.read_users()]

    async def _user_table(self) -> tuple[list[zp.UserRecord], int]:
        """The user table and its record size (learned from it, else from the transport)."""
        zk = self._session.current()

        def download() -> tuple[list[zp.UserRecord], int | None]:
            sizes = zk.free_sizes()
            reported = check_count("users", sizes.users, sizes.user_capacity, MAX_USERS)
            if reported == 0:
                return [], None
            cap = table_cap(sizes.user_capacity, MAX_USERS, MAX_USER_RECORD)
            data = zk.read_table(zp.CMD_USERTEMP_RRQ, zp.FCT_USER, cap)
            try:
                return parse_users(data, reported, self.encoding), (len(data) - 4) // reported
            except zp.ZkFrameError as exc:
                raise ProtocolError(f"user table: {exc}", device=self.name) from exc

        users, size = await self._session.run("read users", download)
        # No user to learn the layout from: the transport's, as pyzk_patches assumes.
        return users, size or (72 if self.config.transport == "tcp" else 28)

    async def upsert_users(self, users: Sequence[TerminalUser]) -> UsersChanged:
        """Create or change users (CMD_USER_WRQ, then CMD_REFRESHDATA). Every user is checked
        against the terminal's layout and encoding first; with any misfit nothing is sent."""
        existing, size = await self._user_table()
        plan = plan_upsert(users, existing, size, self.encoding)
        if plan.problems:
            return UsersChanged(problems=plan.problems)
        zk = self._session.current()
        encoding = self.encoding

        def write() -> str | None:
            for record in plan.records:
                if not zk.write_user(zp.encode_user(record, size, encoding=encoding)):
                    return record.user_id
            zk.refresh_data()
            return None

        refused = await self._session.run(f"write {len(plan.records)} users", write)
        if refused is not None:
            raise CommandRefusedError(
                f"the terminal refused user {refused!r} (CMD_USER_WRQ)", device=self.name
            )
        self._live.user_ids = {}  # learned again before the next live stream
        log.info("zk_users_written", device=self.name, created=len(plan.created), updated=len(plan.updated))
        return UsersChanged(created=plan.created, updated=plan.updated)

    async def delete_users(self, user_ids: Sequence[str]) -> UsersChanged:
        """Delete users by user id (CMD_DELETE_USER by their uid, then CMD_REFRESHDATA)."""
        existing, _size = await self._user_table()
        uids = {record.user_id: record.uid for record in existing}
        wanted = list(dict.fromkeys(user_ids))
        present = [user_id for user_id in wanted if user_id in uids]
        zk = self._session.current()

        def remove() -> str | None:
            for user_id in present:
                if not zk.remove_user(uids[user_id]):
                    return user_id
            if present:
                zk.refresh_data()
            return None

        refused = await self._session.run(f"delete {len(present)} users", remove)
        if refused is not None:
            raise CommandRefusedError(f"the terminal refused to delete user {refused!r}", device=self.name)
        self._live.user_ids = {}
        log.info("zk_users_deleted", device=self.name, deleted=len(present))
        return UsersChanged(deleted=present, not_found=[u for u in wanted if u not in uids])

    def live(self) -> AsyncGenerator[RawPunch | None, None] | None:
        if not self.config.live:
            return None
        return self._live.events(self._learn_user_ids)

    async def _learn_user_ids(self) -> None:
        """Before a live stream: map internal uids to user ids where only the log has the latter.

        16-byte logs carry user ids, 10/14-byte events only internal uids: map them so a
        live punch gets the same identity as the same punch read from the log.
        """
        if self._attendance.record_size == 16 and not self._live.user_ids:
            with contextlib.suppress(DriverError):
                await self.read_users()
