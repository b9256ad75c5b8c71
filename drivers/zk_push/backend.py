"""What the push receiver needs from the gateway, as a Protocol: drivers never import the gateway.

The receiver (`receiver.py`) speaks HTTP with the terminals; everything that outlives a request
goes through a `PushBackend` the gateway implements (`punchgate.gateway.push_backend`):

* `commit` reads (parses) the punches, normalises them exactly like pulled ones and commits
  them durably; only after it returns does the receiver persist the stamp and answer `OK: <n>`. It raises
  `PushStoreRefusedError` when the buffer refuses (full, disk low): the receiver then answers
  an error, so the terminal keeps its records and sends them again later;
* `load_meta` / `save_meta` read and replace what is remembered about a terminal (stamps,
  unparsed lines, its user list) in the buffer, so it survives restarts;
* `contact` and `problem` feed the terminal's health model (a request is a contact; a bad line,
  a request from a foreign address, a stamp that went back are problems);
* `unknown_terminal` decides about a serial number no entry claims (refuse, or quarantine
  under a device of its own).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from punchgate.drivers.base import DeviceInfo, RawPunch
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push.config import Table, ZkPushTerminal


@dataclass(frozen=True, slots=True, kw_only=True)
class PushTerminal:
    """A serial number the receiver serves, and how: the device its records are stored under."""

    name: str  # the device name punches and meta are stored under
    serial_number: str
    timezone: str  # IANA zone of its clock
    realtime: bool = True
    delay: int = 10
    error_delay: int = 30
    trans_interval: int = 1
    tables: tuple[Table, ...] = ("ATTLOG", "OPERLOG")
    encoding: str = "utf-8"
    allowed_sources: tuple[str, ...] = ()
    commands_per_answer: int = 10  # queued commands in one heartbeat answer at most
    quarantined: bool = False  # not in the config: stored under a device named after its serial

    @classmethod
    def from_config(cls, config: ZkPushTerminal, timezone: str) -> PushTerminal:
        return cls(
            name=config.name,
            serial_number=config.serial_number,
            timezone=timezone,
            realtime=config.realtime,
            delay=config.delay,
            error_delay=config.error_delay,
            trans_interval=config.trans_interval,
            tables=tuple(config.tables),
            encoding=config.encoding,
            allowed_sources=tuple(config.allowed_sources),
            commands_per_answer=config.commands_per_answer,
        )


class PushStoreRefusedError(Exception):
    """The gateway cannot store punches now (buffer full, disk low). `stored` were, the rest not."""

    def __init__(self, message: str, *, stored: int = 0) -> None:
        super().__init__(message)
        self.stored = stored


@dataclass(frozen=True, slots=True)
class Committed:
    new: int  # punches the buffer did not hold yet (0 when staged: known only once moved)
    received: int  # punches in the request (new or already stored)
    staged: int = 0  # punches committed staged: deduplicated and counted new later


class PushBackend(Protocol):
    async def commit(
        self, terminal: PushTerminal, read: Callable[[], Sequence[RawPunch]], *, received_at: dt.datetime
    ) -> Committed:
        """Normalise and durably store the punches `read()` gives; raises PushStoreRefusedError
        when refused. `read` (the body's parse) is called once, unless the refusal comes first,
        in the thread that normalises and commits: a backlog post's CPU in one hand-off."""
        ...

    async def load_meta(self, key: str) -> dict[str, Any]:
        """What is remembered under `key` (a device name, or `<device>/roster`); {} if nothing."""
        ...

    async def save_meta(self, key: str, data: dict[str, Any]) -> None:
        """Replace what is remembered under `key`, durably."""
        ...

    def contact(self, terminal: PushTerminal, info: DeviceInfo) -> None:
        """The terminal made a request (any request: it is alive and can reach us)."""
        ...

    def problem(self, terminal: PushTerminal, fault: DeviceFault, detail: str) -> None:
        """Something about this terminal worth a fault (protocol_error, log_reset)."""
        ...

    def unknown_terminal(self, serial_number: str, address: str) -> PushTerminal | None:
        """A serial number no entry claims: how to serve it (quarantine), or None to refuse it."""
        ...
