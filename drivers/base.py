"""The common interface every terminal driver implements, and the registry keyed by config `type`.

A driver owns one connection to one terminal. The gateway's worker is its only caller and
serialises every operation on it, so drivers need not be safe for concurrent use.
Raw punches keep the terminal's own fields; normalisation (ids, UTC, names) happens once,
in `gateway.normalize`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, kw_only=True)
class RawPunch:
    """One attendance record exactly as the terminal reported it."""

    user_id: str
    timestamp: dt.datetime  # naive terminal-local time
    state: int  # punch/state code: 0 in, 1 out, 2 break-out, 3 break-in, 4 OT-in, 5 OT-out
    verify: int  # verify type code: 0 password, 1 fingerprint, 2 card, 15 face, ...
    work_code: int = 0
    raw: bytes = b""  # the record's bytes where the driver has them, for audit


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

    fault = "protocol_error"

    def __init__(self, message: str, *, device: str = "") -> None:
        self.device = device
        super().__init__(f"{device}: {message}" if device else message)


class UnreachableError(DriverError):
    """No answer at the network or line level (refused, no route, nothing on the bus)."""

    fault = "unreachable"


class DriverTimeoutError(DriverError):
    """The terminal accepted the session but stopped answering."""

    fault = "timeout"


class AuthError(DriverError):
    """The terminal refused our comm key / password."""

    fault = "auth_failed"


class ProtocolError(DriverError):
    """Garbage, a truncated frame, an unexpected reply, or counts that do not add up."""

    fault = "protocol_error"


class UnsupportedDeviceError(DriverError):
    """Something answered, but it does not speak this protocol."""

    fault = "unsupported"


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


DriverFactory = Callable[[Any], Driver]
_REGISTRY: dict[str, DriverFactory] = {}


def register(type_name: str) -> Callable[[DriverFactory], DriverFactory]:
    """Register a driver factory under the config's terminal `type`."""

    def wrap(factory: DriverFactory) -> DriverFactory:
        if type_name in _REGISTRY:
            raise ValueError(f"driver type {type_name!r} registered twice")
        _REGISTRY[type_name] = factory
        return factory

    return wrap


def create_driver(terminal_config: Any) -> Driver:
    """Build the driver for one terminal's config entry (its `type` picks the factory)."""
    load_builtin_drivers()
    try:
        factory = _REGISTRY[terminal_config.type]
    except KeyError:
        raise ValueError(f"no driver registered for terminal type {terminal_config.type!r}") from None
    return factory(terminal_config)


def load_builtin_drivers() -> None:
    """Import the bundled driver packages so their `register` calls run."""
    import importlib

    for module in ("punchgate.drivers.zk.driver", "punchgate.drivers.anviz.driver"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
