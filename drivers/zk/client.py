"""The blocking queries the driver asks a ZK terminal, encoded and decoded by the codec.

`ZkClient` adds to the patched pyzk client (`pyzk_patches.PatchedZK`) the small commands the
driver needs (free sizes, options, state, firmware, clock) and the buffered table read, capped
by the caller (`limits`). They go through `PatchedZK.exchange` and the codec
(`punchgate.drivers.zk.protocol`) rather than pyzk's own methods, so replies are checked the
same way everywhere and pyzk's encoders are not used (its SET_TIME encodes year % 100, wrong
from 2100). No pyzk private state here.

Blocking, one thread at a time: the driver calls these from its thread pool (`session`).
"""

from __future__ import annotations

import datetime as dt
import struct
import sys
from collections.abc import Callable

from zk.exception import ZKErrorResponse

from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.parsing import InfoAnswers
from punchgate.drivers.zk.pyzk_patches import PatchedZK


class ZkClient(PatchedZK):
    """The patched pyzk client with the driver's queries. Blocking; one thread at a time."""

    def read_table(
        self, command: int, fct: int, cap: int, on_data: Callable[[bytes, int], None] | None = None
    ) -> bytes:
        """A whole table by buffered read (PREPARE_BUFFER / READ_BUFFER), at most `cap` bytes;
        `on_data(chunk, total)` sees each chunk as it arrives (`PatchedZK.read_buffered`)."""
        return self.read_buffered(command, fct, cap, on_data)[0]

    def read_table_from(self, command: int, fct: int, cap: int, start: int) -> tuple[bytes, int]:
        """A table's bytes from byte `start` to its end, and the whole table's size: the same
        PREPARE_BUFFER as `read_table` (the terminal stages the whole set), then READ_BUFFER
        from `start` only (docs: READ_BUFFER takes a u32 start and size), each chunk bounded
        as there. A set small enough to come at once (CMD_DATA) is cut here."""
        return self.read_buffered(command, fct, cap, start=start)

    def free_sizes(self) -> zp.FreeSizes:
        reply = self.exchange(zp.CMD_GET_FREE_SIZES, b"", 1024)
        if reply.command != zp.CMD_ACK_OK:
            raise ZKErrorResponse(f"GET_FREE_SIZES refused (reply {reply.command})")
        return zp.decode_free_sizes(reply.data)

    def option(self, key: str) -> str | None:
        """One OPTIONS_RRQ value, or None when the terminal does not know the key."""
        reply = self.exchange(zp.CMD_OPTIONS_RRQ, zp.encode_option_request(key), 1024)
        if reply.command != zp.CMD_ACK_OK or b"=" not in reply.data:
            return None
        return zp.decode_option_reply(reply.data)[1]

    def device_enabled(self) -> bool | None:
        """STATE_RRQ: the state travels in the session field, 0 = disabled (idle, refuses punches).

        None when the firmware does not answer the query (it is optional on older models).
        """
        reply = self.exchange(zp.CMD_STATE_RRQ, b"", 8)
        if reply.command != zp.CMD_ACK_OK:
            return None
        return reply.session != 0

    def firmware(self) -> str:
        reply = self.exchange(zp.CMD_GET_VERSION, b"", 1024)
        if reply.command != zp.CMD_ACK_OK:
            return ""
        return reply.data.split(b"\x00", 1)[0].decode("ascii", errors="replace")

    def clock_raw(self) -> int:
        reply = self.exchange(zp.CMD_GET_TIME, b"", 1032)
        if reply.command != zp.CMD_ACK_OK or len(reply.data) < 4:
            raise ZKErrorResponse(f"GET_TIME refused (reply {reply.command})")
        return int(struct.unpack_from("<I", reply.data)[0])

    def write_clock(self, when: dt.datetime) -> None:
        # pyzk's encoder uses year % 100 (wrong from 2100); the codec's is not.
        reply = self.exchange(zp.CMD_SET_TIME, struct.pack("<I", zp.encode_time(when)), 8)
        if reply.command != zp.CMD_ACK_OK:
            raise ZKErrorResponse(f"SET_TIME refused (reply {reply.command})")

    # -- what remote commands send (gateway/commands); each returns whether the terminal agreed --
    def write_user(self, record: bytes) -> bool:
        """CMD_USER_WRQ: create or replace the user with that record's uid."""
        return self.exchange(zp.CMD_USER_WRQ, record, 1024).command == zp.CMD_ACK_OK

    def remove_user(self, uid: int) -> bool:
        """CMD_DELETE_USER by internal uid (the terminal answers ACK_ERROR for an unknown one)."""
        return self.exchange(zp.CMD_DELETE_USER, struct.pack("<H", uid), 1024).command == zp.CMD_ACK_OK

    def refresh_data(self) -> bool:
        """CMD_REFRESHDATA: the terminal reloads its tables after user changes (as pyzk does)."""
        return self.exchange(zp.CMD_REFRESHDATA, b"", 1024).command == zp.CMD_ACK_OK

    def set_enabled(self, enabled: bool) -> bool:
        """CMD_ENABLEDEVICE / CMD_DISABLEDEVICE (disabled: the terminal refuses punches)."""
        command = zp.CMD_ENABLEDEVICE if enabled else zp.CMD_DISABLEDEVICE
        return self.exchange(command, b"", 1024).command == zp.CMD_ACK_OK

    def reboot(self) -> bool:
        """CMD_RESTART: the terminal acknowledges, then reboots (the session is gone)."""
        return self.exchange(zp.CMD_RESTART, b"", 1024).command == zp.CMD_ACK_OK

    # What a terminal says about its make (name, firmware, platform, MAC), asked at a session's
    # first contact only: it does not change while a session lasts (a firmware upgrade or a new
    # board reboots the terminal, which ends the session). Each is a round trip through the
    # shared pool on every poll of every terminal: 8 round trips a contact became 4.
    _make: tuple[str, str, str, str] | None = None

    def info_answers(self) -> InfoAnswers:
        """Everything `ZkDriver.info()` reports, asked in one go (in this order on the wire; the
        make only at the session's first contact). The serial number is asked every time: it
        is how a replaced terminal is told apart, and it costs one round trip."""
        sizes = self.free_sizes()
        clock_raw = self.clock_raw()
        enabled = self.device_enabled()
        make = self._make
        if make is None:
            device_name = self.option("~DeviceName") or ""
        serial_number = self.option("~SerialNumber") or ""
        if make is None:
            firmware = self.firmware()
            platform = self.option("~Platform") or ""
            mac = self.option("MAC") or ""
            # Interned: a fleet's terminals mostly share a few makes, and each terminal's info
            # (kept by its health model) would otherwise hold its own copies of the same names.
            make = self._make = (sys.intern(device_name), sys.intern(firmware), sys.intern(platform), mac)
        device_name, firmware, platform, mac = make
        return InfoAnswers(
            sizes=sizes,
            clock_raw=clock_raw,
            enabled=enabled,
            device_name=device_name,
            serial_number=serial_number,
            firmware=firmware,
            platform=platform,
            mac=mac,
        )
