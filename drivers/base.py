"""The common interface every terminal driver implements, and the registry keyed by config `type`.

A driver owns one connection to one terminal. The gateway's worker is its only caller and
serialises every operation on it, so drivers need not be safe for concurrent use.
Raw punches keep the terminal's own fields; normalisation (ids, UTC, names) happens once,
in `punchgate.gateway.normalize`, using the code names each driver's description declares.

This module and `punchgate.drivers.config` are the drivers' shared base: drivers import them,
never `punchgate.gateway` or `punchgate.sync` (import-linter enforces it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from punchgate.drivers.faults import DeviceFault

# The punch-state codes that ZK and Anviz terminals share, with the contract's names for them.
COMMON_STATE_NAMES: Mapping[int, str] = {
    0: "check_in",
    1: "check_out",
    2: "break_out",
    3: "break_in",
    4: "overtime_in",
    5: "overtime_out",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RawPunch:
    """One attendance record exactly as the terminal reported it."""

    user_id: str
    timestamp: dt.datetime  # naive terminal-local time
    state: int  # punch/state code: 0 in, 1 out, 2 break-out, 3 break-in, 4 OT-in, 5 OT-out
    verify: int  # verify type code: 0 password, 1 fingerprint, 2 card, 15 face, ...
    work_code: int = 0
    raw: bytes = b""  # the record's bytes where the driver has them, for audit


@dataclass(frozen=True, slots=True)
class TailOutcome:
    """A tail read made together with a contact (ZK: `ZkDriver.info_then_tail`): the record it
    read from, and the records from there to the end of the log (None: only a whole read can
    say, as `read_records_from`'s None)."""

    first: int
    records: list[RawPunch] | None
    failed: DriverError | None = None  # the tail read failed (the contact did not): raise it


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What a terminal says about itself on contact."""

    serial_number: str
    model: str = ""
    firmware: str = ""
    platform: str = ""
    device_name: str = ""
    mac: str = ""
    clock: dt.datetime | None = None  # naive terminal-local time when asked
    user_count: int | None = None
    user_capacity: int | None = None
    record_count: int | None = None
    record_capacity: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class DriverError(Exception):
    """Base of every error a driver raises. `fault` is the health fault code it maps to."""

    fault: DeviceFault = DeviceFault.PROTOCOL_ERROR

    def __init__(self, message: str, *, device: str = "") -> None:
        self.device = device
        super().__init__(f"{device}: {message}" if device else message)


class UnreachableError(DriverError):
    """No answer at the network or line level (refused, no route, nothing on the bus)."""

    fault: DeviceFault = DeviceFault.UNREACHABLE


class DriverTimeoutError(DriverError):
    """The terminal accepted the session but stopped answering."""

    fault: DeviceFault = DeviceFault.TIMEOUT


class AuthError(DriverError):
    """The terminal refused our comm key / password."""

    fault: DeviceFault = DeviceFault.AUTH_FAILED


class ProtocolError(DriverError):
    """Garbage, a truncated frame, an unexpected reply, or counts that do not add up."""

    fault: DeviceFault = DeviceFault.PROTOCOL_ERROR


class UnsupportedDeviceError(DriverError):
    """Something answered, but it does not speak this protocol."""

    fault: DeviceFault = DeviceFault.UNSUPPORTED


class CommandRefusedError(DriverError):
    """The terminal answered a remote command and refused it; the session is still usable."""


class CommandUnsupportedError(DriverError):
    """The terminal's protocol (or this driver) cannot do what a remote command asks; says why."""

    fault: DeviceFault = DeviceFault.UNSUPPORTED


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalUser:
    """An enrolled user as remote commands see it (users.list / users.upsert), family-neutral.

    On upsert, None means "leave as it is" for an existing user, "the default" for a new one.
    Read back, `password` is never filled: `password_set` says whether one is.
    """

    user_id: str
    name: str | None = None
    privilege: str | None = None  # "user" or "admin"
    card: int | None = None  # 0: no card
    password: str | None = None  # digits; "" removes it
    password_set: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "name": self.name,
            "privilege": self.privilege,
            "card": self.card,
            "password_set": self.password_set,
        }


@dataclass(frozen=True, slots=True)
class UserProblem:
    """A user that does not fit the terminal (checked before anything is sent)."""

    user_id: str
    problem: str  # e.g. "name 'Zoë Smith-Jones' needs 26 bytes in gbk, the terminal keeps 24"


@dataclass(frozen=True, slots=True)
class UsersChanged:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    problems: list[UserProblem] = field(default_factory=list)  # nothing was sent when not empty


@runtime_checkable
class Administered(Protocol):
    """What a driver offers remote commands besides reading (gateway/commands). A driver that
    cannot do one raises CommandUnsupportedError saying why, and lists it in `cannot` (method
    name -> reason) so the gateway can answer without waiting for the terminal."""

    cannot: Mapping[str, str]

    async def restart(self) -> None:
        """Reboot the terminal; the session is over afterwards (the worker reconnects)."""
        ...

    async def set_enabled(self, enabled: bool) -> None: ...

    async def list_users(self) -> list[TerminalUser]: ...

    async def upsert_users(self, users: Sequence[TerminalUser]) -> UsersChanged:
        """Create or change users; checks every one first and sends nothing when one does not
        fit (`problems`)."""
        ...

    async def delete_users(self, user_ids: Sequence[str]) -> UsersChanged: ...


@runtime_checkable
class Driver(Protocol):
    """The async interface a device worker uses. All calls happen on one task at a time."""

    name: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def info(self) -> DeviceInfo: ...

    async def read_records(self) -> list[RawPunch]: ...

    async def set_time(self, when: dt.datetime) -> None: ...

    async def clear_records(self, expected_count: int) -> None: ...

    def live(self) -> AsyncGenerator[RawPunch | None, None] | None:
        """A stream of real-time punches, or None when the terminal or config has none.

        It yields None as an idle tick at least every second or so, so that the worker can
        leave the stream to reconcile. The worker closes it (`aclose()`) before it sends any
        other command; closing must leave the connection usable (e.g. unregister events).
        A lost connection raises a DriverError from the iteration.
        """
        ...


@runtime_checkable
class ChunkedReader(Protocol):
    """A driver that can hand a full read over in parts while the transfer goes on."""

    def read_record_chunks(self) -> AsyncGenerator[Sequence[RawPunch], None]:
        """Every record of `read_records`, in log order, in consecutive parts as they arrive
        (a part may be `punchgate.drivers.packed.PackedRecords`: decoded only where read).

        What was yielded before an error is real (the caller may keep it); closing the
        generator early aborts the transfer."""
        ...


def record_chunks(driver: Driver) -> AsyncGenerator[Sequence[RawPunch], None]:
    """A full read in parts: the driver's own where it has them, else its whole log as one."""
    if isinstance(driver, ChunkedReader):
        return driver.read_record_chunks()
    return _whole_log(driver)


async def _whole_log(driver: Driver) -> AsyncGenerator[Sequence[RawPunch], None]:
    yield await driver.read_records()


DriverFactory = Callable[[Any], Driver]
