"""The Anviz driver: the common `Driver` interface over a serial bus or TCP link.

Reading follows what CrossChex does on the wire: ask 0x3C how many records are new, fetch
exactly that many with 0x40 (new-records mode, 25 per packet), and only after the worker has
committed them durably clear the new flag on exactly that many (0x4E type 2). The records
stay in the terminal's log; only their "new" mark goes, so a gateway that dies between the
read and the clear reads them again and the buffer's unique id absorbs the repeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING

import structlog

from punchgate.drivers.anviz import codec, staff
from punchgate.drivers.anviz.codec import Record, RecordInfo, Request
from punchgate.drivers.anviz.endpoint import Endpoint, parse_endpoint
from punchgate.drivers.anviz.transport import Link, TcpLink, make_link
from punchgate.drivers.base import (
    CommandRefusedError,
    CommandUnsupportedError,
    DeviceInfo,
    DriverError,
    ProtocolError,
    RawPunch,
    TerminalUser,
    UnreachableError,
    UserProblem,
    UsersChanged,
)

if TYPE_CHECKING:
    from punchgate.drivers.anviz.config import AnvizTerminal

log = structlog.get_logger(__name__)

# Verify codes in the Anviz vocabulary (drivers/anviz/names.py VERIFY_NAMES).
VERIFY_UNKNOWN = 0
VERIFY_FINGERPRINT = 1
VERIFY_PASSWORD = 2
VERIFY_CARD = 3
VERIFY_FINGERPRINT_CARD = 5
LIVE_IDLE_TICK = 1.0  # seconds between idle ticks of the live stream, so the worker can poll


def verify_code(backup_code: int) -> int:
    """Map the record's backup code (bit0 FP1, bit1 FP2, bit2 password, bit3 card; newer
    firmware: finger index 1-10 in bits 7-4) onto the gateway's anviz verify codes."""
    fingerprint = bool(backup_code & 0x03 or backup_code >> 4)
    card = bool(backup_code & 0x08)
    if fingerprint and card:
        return VERIFY_FINGERPRINT_CARD
    if fingerprint:
        return VERIFY_FINGERPRINT
    if card:
        return VERIFY_CARD
    if backup_code & 0x04:
        return VERIFY_PASSWORD
    return VERIFY_UNKNOWN


def raw_punch(record: Record, epoch: dt.datetime) -> RawPunch:
    return RawPunch(
        user_id=str(record.user_code),
        timestamp=record.local_time(epoch),
        state=record.state,  # the low nibble; bit 7 (door opened) stays in `raw`
        verify=verify_code(record.backup_code),
        work_code=record.work_code,
        raw=record.encode(),
    )


class AnvizDriver:
    """One Anviz terminal, addressed by device id on a serial bus or over TCP."""

    def __init__(
        self,
        *,
        name: str,
        endpoint: Endpoint,
        device_id: int,
        timeout: float = 2.0,
        attempts: int = 3,
        epoch: dt.datetime = codec.DEFAULT_EPOCH,
        live: bool = True,
    ) -> None:
        self.name = name
        self.device_id = device_id
        self.epoch = epoch
        self.link: Link = make_link(
            endpoint, name=name, device_id=device_id, timeout=timeout, attempts=attempts
        )
        self._want_live = live

    @classmethod
    def from_config(cls, config: AnvizTerminal) -> AnvizDriver:
        return cls(
            name=config.name,
            endpoint=parse_endpoint(config.endpoint),
            device_id=config.device_id,
            timeout=config.timeout,
            attempts=config.retries + 1,
            epoch=dt.datetime.fromisoformat(config.epoch),
            live=config.live,
        )

    def _request(self, command: int, data: bytes = b"") -> Request:
        return Request(self.device_id, command, data)

    async def _ask(self, command: int, data: bytes = b"") -> bytes:
        return (await self.link.request_ok(self._request(command, data))).data

    def _decode_error(self, exc: codec.CodecError) -> ProtocolError:
        return ProtocolError(str(exc), device=self.name)

    # ---- Driver interface -------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the link and make sure the terminal answers (raises UnreachableError if not)."""
        await self.link.open()
        await self.record_info()

    async def close(self) -> None:
        await self.link.close()

    async def record_info(self) -> RecordInfo:
        try:
            return RecordInfo.decode(await self._ask(codec.CMD_GET_RECORD_INFO))
        except codec.CodecError as exc:
            raise self._decode_error(exc) from None

    async def info(self) -> DeviceInfo:
        try:
            config1 = codec.Config1.decode(await self._ask(codec.CMD_GET_CONFIG1))
            serial = await self._serial_number(config1)
            model = codec.decode_text(await self._ask(codec.CMD_GET_MODEL))
            capacity = codec.Capacity.decode(await self._ask(codec.CMD_GET_CAPACITY))
            counts = await self.record_info()
            clock = codec.decode_clock(await self._ask(codec.CMD_GET_TIME))
        except codec.CodecError as exc:
            raise self._decode_error(exc) from None
        return DeviceInfo(
            serial_number=serial,
            model=model,
            firmware=config1.firmware,
            platform="anviz-tc_b",
            clock=clock,
            user_count=counts.users,
            user_capacity=capacity.users,
            record_count=counts.all_records,
            record_capacity=capacity.records,
            extra={
                "device_id": self.device_id,
                "new_records": counts.new_records,
                "fingerprints": counts.fingerprints,
                "cards": counts.cards,
                "link": dataclasses.asdict(self.link.stats),
            },
        )

    async def _serial_number(self, config1: codec.Config1) -> str:
        # Only "command version" 2+ firmware answers 0x24; older ones are known by device id.
        if config1.command_version >= 2:
            response = await self.link.request(self._request(codec.CMD_GET_SERIAL))
            serial = codec.decode_text(response.data) if response.ret == codec.RET_SUCCESS else ""
            if serial:
                return serial
        return f"anviz-{self.device_id}"

    async def read_records(self) -> list[RawPunch]:
        """The terminal's new (not yet marked read) records, oldest first. Clears nothing."""
        records = await self.download(new_only=True)
        return [raw_punch(r, self.epoch) for r in records]

    async def download(self, *, new_only: bool) -> list[Record]:
        """Fetch the new records (or all of them) in packets of up to 25."""
        counts = await self.record_info()
        wanted = counts.new_records if new_only else counts.all_records
        first_mode = codec.DOWNLOAD_NEW_FROM_START if new_only else codec.DOWNLOAD_ALL_FROM_START
        records: list[Record] = []
        previous: bytes | None = None
        repeats = 0
        while len(records) < wanted:
            size = min(codec.MAX_RECORDS_PER_PACKET, wanted - len(records))
            request = codec.download_request(
                self.device_id, first_mode if previous is None else codec.DOWNLOAD_CONTINUE, size
            )
            # A first packet is safe to repeat (it restarts); a later one is not (it advances
            # the terminal's cursor), so its retry asks for the last packet again instead.
            retry = (
                request
                if previous is None
                else codec.download_request(self.device_id, codec.DOWNLOAD_RESEND_LAST, size)
            )
            response = await self.link.request_ok(request, retry=retry)
            if previous is not None and response.data == previous:
                # Our "continue" never reached the terminal, so "resend" gave the packet we have.
                repeats += 1
                if repeats > self.link.attempts:
                    raise ProtocolError("the terminal keeps resending the same packet", device=self.name)
                continue
            try:
                batch = codec.decode_records(response.data)
            except codec.CodecError as exc:
                raise self._decode_error(exc) from None
            if len(batch) > size:
                raise ProtocolError(f"asked for {size} records, got {len(batch)}", device=self.name)
            records.extend(batch)
            previous, repeats = response.data, 0
            if len(batch) < size:
                break  # the terminal has fewer than it counted (e.g. deleted meanwhile)
        if len(records) != wanted:
            log.warning("anviz_short_read", device=self.name, expected=wanted, received=len(records))
        log.debug("anviz_download_done", device=self.name, records=len(records), new_only=new_only)
        return records

    async def set_time(self, when: dt.datetime) -> None:
        try:
            data = codec.encode_clock(when)
        except codec.CodecError as exc:
            raise ProtocolError(str(exc), device=self.name) from None
        await self._ask(codec.CMD_SET_TIME, data)
        log.info("anviz_clock_set", device=self.name, time=when.isoformat())

    async def clear_records(self, expected_count: int) -> None:
        """Mark the `expected_count` oldest new records read (0x4E type 2), never more.

        Called by the worker only after those records were durably committed. A lost reply
        is never simply retried, because a second clear would mark records nobody has read:
        the counts tell whether the first one happened.
        """
        if expected_count <= 0:
            return
        before = await self.record_info()
        if before.new_records < expected_count:
            raise ProtocolError(
                f"terminal has {before.new_records} new records, expected at least {expected_count}; "
                "something else marked them read, so nothing was cleared",
                device=self.name,
            )
        request = codec.clear_request(self.device_id, codec.CLEAR_NEW_FLAG_COUNT, expected_count)
        for _ in range(self.link.attempts):
            try:
                response = await self.link.request_ok(request, attempts=1)
            except DriverError as exc:
                after = await self.record_info()
                arrived = after.all_records - before.all_records
                if after.new_records == before.new_records - expected_count + arrived:
                    log.info("anviz_clear_confirmed_by_counts", device=self.name, records=expected_count)
                    return
                if after.new_records != before.new_records + arrived:
                    raise ProtocolError(
                        f"cannot tell whether the clear happened ({exc})", device=self.name
                    ) from exc
                before = after
                continue
            cleared = codec.decode_clear_reply(response.data) if len(response.data) == 3 else -1
            if cleared != expected_count:
                raise ProtocolError(
                    f"asked to clear {expected_count}, terminal cleared {cleared}", device=self.name
                )
            log.info("anviz_new_flags_cleared", device=self.name, records=cleared)
            return
        raise UnreachableError(f"clear of {expected_count} records got no answer", device=self.name)

    # ---- remote commands (punchgate.drivers.base.Administered; gateway/commands) ---------------
    cannot: Mapping[str, str] = {
        "set_enabled": "the Anviz TC_B protocol has no command to disable or enable a terminal",
    }

    async def restart(self) -> None:
        """0x2E with 0x60, as the SDK reboots a terminal; the link is closed afterwards (the
        terminal drops it while it reboots) and the worker connects again."""
        await self._ask(codec.CMD_REBOOT, bytes([codec.REBOOT_PARAMETER]))
        log.info("anviz_restarted", device=self.name)
        await self.link.close()

    async def set_enabled(self, enabled: bool) -> None:
        raise CommandUnsupportedError(self.cannot["set_enabled"], device=self.name)

    async def _staff(self) -> list[staff.StaffRecord]:
        """Every staff record (0x72, up to 8 per packet, as many as 0x3C counts users)."""
        wanted = (await self.record_info()).users
        records: list[staff.StaffRecord] = []
        first = True
        while len(records) < wanted:
            count = min(codec.USERS_PER_PACKET, wanted - len(records))
            data = await self._ask(codec.CMD_GET_USERS, bytes([1 if first else 0, count]))
            try:
                batch = staff.decode_batch(data)
            except codec.CodecError as exc:
                raise self._decode_error(exc) from None
            records.extend(batch)
            first = False
            if len(batch) < count:
                break  # fewer than counted (deleted meanwhile)
        return records

    async def list_users(self) -> list[TerminalUser]:
        return [staff.to_terminal_user(record) for record in await self._staff()]

    async def upsert_users(self, users: Sequence[TerminalUser]) -> UsersChanged:
        """Create or change staff records (0x73, 8 per packet). Every user is checked first;
        with any misfit nothing is sent. A changed user keeps the bytes not asked to change."""
        problems = [
            UserProblem(user.user_id, problem)
            for user in users
            if (problem := staff.user_problem(user)) is not None
        ]
        if problems:
            return UsersChanged(problems=problems)
        existing = {record.user_id: record for record in await self._staff()}
        records: dict[int, staff.StaffRecord] = {}
        created: list[str] = []
        updated: list[str] = []
        for user in users:
            key = int(user.user_id)
            (updated if key in existing or key in records else created).append(user.user_id)
            records[key] = staff.merged(records.get(key) or existing.get(key), user)
        batch = list(records.values())
        for start in range(0, len(batch), codec.USERS_PER_PACKET):
            chunk = batch[start : start + codec.USERS_PER_PACKET]
            response = await self.link.request(self._request(codec.CMD_SET_USERS, staff.encode_batch(chunk)))
            if response.ret != codec.RET_SUCCESS:
                names = ", ".join(str(r.user_id) for r in chunk)
                raise CommandRefusedError(
                    f"the terminal refused users {names} (0x73, RET 0x{response.ret:02X}: "
                    f"{'full' if response.ret == 0x04 else 'refused'})",
                    device=self.name,
                )
        log.info("anviz_users_written", device=self.name, created=len(created), updated=len(updated))
        return UsersChanged(created=created, updated=updated)

    async def delete_users(self, user_ids: Sequence[str]) -> UsersChanged:
        """Delete whole users (0x4C with 0xFF); RET 0x06 means there was no such user."""
        deleted: list[str] = []
        not_found: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            if not (user_id.isascii() and user_id.isdigit()) or int(user_id) > staff.MAX_USER_ID:
                not_found.append(user_id)  # no Anviz terminal can hold it
                continue
            data = int(user_id).to_bytes(5, "big") + bytes([codec.DELETE_WHOLE_USER])
            response = await self.link.request(self._request(codec.CMD_DELETE_USER, data))
            if response.ret == codec.RET_NO_SUCH_USER:
                not_found.append(user_id)
            elif response.ret == codec.RET_SUCCESS:
                deleted.append(user_id)
            else:
                raise CommandRefusedError(
                    f"the terminal refused to delete user {user_id} (0x4C, RET 0x{response.ret:02X})",
                    device=self.name,
                )
        log.info("anviz_users_deleted", device=self.name, deleted=len(deleted))
        return UsersChanged(deleted=deleted, not_found=not_found)

    def live(self) -> AsyncGenerator[RawPunch | None, None] | None:
        """Real-time pushes (TCP only: on a shared RS485 line a terminal cannot speak unasked)."""
        if not (self._want_live and isinstance(self.link, TcpLink)):
            return None
        return self._live(self.link)

    async def _live(self, link: TcpLink) -> AsyncGenerator[RawPunch | None, None]:
        await self._enable_realtime()
        while True:
            try:
                async with asyncio.timeout(LIVE_IDLE_TICK):  # never swallows a cancellation
                    push = await link.pushes.get()
            except TimeoutError:
                if not link.connected:
                    raise UnreachableError("connection closed while listening", device=self.name) from None
                yield None  # idle tick: lets the worker notice a poll falling due
                continue
            try:
                record = Record.decode(push.data)
            except codec.CodecError as exc:
                # the record stays flagged new on the terminal; the next poll fetches it
                log.warning("anviz_bad_push", device=self.name, raw=push.raw.hex(), error=str(exc))
                continue
            yield raw_punch(record, self.epoch)

    async def _enable_realtime(self) -> None:
        config2 = await self._ask(codec.CMD_GET_CONFIG2)
        if len(config2) > codec.CONFIG2_REALTIME_INDEX and config2[codec.CONFIG2_REALTIME_INDEX] == 1:
            return
        change = bytearray([0xFF] * codec.CONFIG2_SIZE)  # 0xFF: leave the setting as it is
        change[codec.CONFIG2_REALTIME_INDEX] = 1
        await self._ask(codec.CMD_SET_CONFIG2, bytes(change))
        log.info("anviz_realtime_enabled", device=self.name)
