"""The push receiver: an aiohttp sub-application serving the iclock endpoints to push terminals.

The gateway mounts it under `/iclock/` on its LAN-facing listener (`punchgate.gateway.push`),
which bounds connections, request heads and body sizes before a request gets here. Everything
that must outlive a request goes through the gateway's `PushBackend` (`backend.py`).

Endpoints (protocol 2.x; docs/zk-push.md):

| request | answer |
|---|---|
| `GET /iclock/cdata?SN=…&options=all[&pushver=…]` | the option block, with the stamps stored so far |
| `POST /iclock/cdata?SN=…&table=ATTLOG&Stamp=N` | `OK: <punches stored>`, only once they are committed |
| `POST /iclock/cdata?SN=…&table=OPERLOG&Stamp=N` | `OK: <lines>`; USER lines kept as the terminal's user list |
| `POST /iclock/cdata?SN=…&table=ATTPHOTO&Stamp=N`, `POST /iclock/fdata?SN=…` | `OK`: counted, not kept |
| `GET /iclock/getrequest?SN=…[&INFO=…]` | `OK`, or the `C:<id>:<command>` lines the gateway's queue hands out |
| `POST /iclock/devicecmd?SN=…` | `OK` once the results are recorded in the queue (matched by id) |

The `.aspx` spellings older firmware uses are served too.

Invariants:

* A stamp is persisted only after the records posted with it are durably stored, and before
  `OK` is answered. A failure anywhere before that answers an error: the terminal keeps its
  records and sends them again, and record ids make the repeat harmless.
* A line that cannot be parsed never costs the rest of its body: it is kept with its text
  in the terminal's meta (`push_unparsed`, the newest `MAX_UNPARSED_KEPT`), logged, counted,
  and reported as `protocol_error`; the answer counts what was stored.
* A stamp lower than the one stored means the terminal's log started again (cleared,
  replaced, factory reset): `log_reset`, and the lower stamp is stored, so nothing it sends
  from now on is skipped.
* Fingerprint and other biometric lines are counted, never kept or logged; a user's password
  and card number are never kept.
* Requests of one terminal that change what is remembered about it run one at a time.
* Commands (`commands.py`) come from a `CommandSource` (the gateway's durable queue): the lines
  of an answer are recorded as sent before it leaves, results before `OK` is answered. A queue
  that cannot answer costs the heartbeat nothing: it is answered `OK`, without commands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from punchgate.drivers.base import DeviceInfo
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push import commands, protocol
from punchgate.drivers.zk_push.backend import PushBackend, PushStoreRefusedError, PushTerminal
from punchgate.drivers.zk_push.config import SERIAL_PATTERN

log = structlog.get_logger(__name__)

MAX_UNPARSED_KEPT = 100  # unparsable lines kept per terminal (the newest)
MAX_ROSTER = 50_000  # users remembered per terminal
MAX_LOGGED_LINES = 20  # bad lines / operations logged per terminal per minute; the rest counted
MAX_INFO = 50  # device facts remembered per terminal
TEXT = "text/plain"
_SERIAL = re.compile(SERIAL_PATTERN)
ROSTER_SUFFIX = "/roster"  # meta key of a terminal's user list: `<device>/roster`

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ok(text: str = "OK") -> web.Response:
    return web.Response(text=text, content_type=TEXT)


def _refuse(status: int, sentence: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        403: web.HTTPForbidden,
        503: web.HTTPServiceUnavailable,
    }
    return kinds[status](text=sentence + "\n", content_type=TEXT)


@dataclass
class _LogBudget:
    """At most MAX_LOGGED_LINES detailed log lines a minute per terminal; the rest only counted."""

    window: float = 0.0
    used: int = 0

    def take(self) -> bool:
        now = time.monotonic()
        if now - self.window >= 60:
            self.window, self.used = now, 0
        self.used += 1
        return self.used <= MAX_LOGGED_LINES


@dataclass
class TerminalState:
    """What the receiver holds for one terminal between requests."""

    terminal: PushTerminal
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    meta: dict[str, Any] | None = None  # loaded on first use, then kept in step with the buffer
    meta_unsaved: bool = False  # changed since loaded (a new serial number) and not saved yet
    pushver: str | None = None
    facts: dict[str, str] = field(default_factory=dict)  # INFO and devicecmd facts
    budget: _LogBudget = field(default_factory=_LogBudget)

    def device_info(self) -> DeviceInfo:
        facts = self.facts
        firmware = facts.get("firmware") or facts.get("FWVersion") or ""
        if not firmware and self.pushver:
            firmware = f"push {self.pushver}"
        extra: dict[str, Any] = {"push_version": self.pushver} if self.pushver else {}
        if facts.get("ip"):
            extra["ip"] = facts["ip"]
        return DeviceInfo(
            serial_number=self.terminal.serial_number,
            firmware=firmware[:80],
            user_count=protocol.count(facts.get("user_count") or facts.get("UserCount")),
            record_count=protocol.count(facts.get("record_count") or facts.get("TransactionCount")),
            extra=extra,
        )


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


def _in_networks(address: str, networks: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


class Receiver:
    """The receiver's state and handlers; `build_receiver` wraps it in an aiohttp application."""

    def __init__(
        self,
        terminals: Sequence[PushTerminal],
        backend: PushBackend,
        *,
        clock: Clock = _utc_now,
        command_source: commands.CommandSource | None = None,
    ) -> None:
        self.by_serial = {t.serial_number: t for t in terminals}
        self.backend = backend
        self.commands = command_source
        self.clock = clock
        self.states: dict[str, TerminalState] = {}  # by device name
        self.counts: Counter[str] = Counter()  # requests, refusals, lines: see docs/zk-push.md

    # --- who is asking --------------------------------------------------------------------
    def _identify(self, request: web.Request) -> TerminalState:
        serial = request.query.get("SN") or request.query.get("sn") or ""
        if not serial:
            self.counts["refused_no_serial"] += 1
            raise _refuse(400, "no SN= in the request: the terminal must name its serial number")
        if not _SERIAL.fullmatch(serial):
            self.counts["refused_bad_serial"] += 1
            raise _refuse(400, "SN= is not a serial number (letters, digits, '.', '_', '-'; at most 56)")
        address = _address(request)
        terminal = self.by_serial.get(serial)
        if terminal is None:
            terminal = self.backend.unknown_terminal(serial, address)
            if terminal is None:
                self.counts["refused_unknown_serial"] += 1
                raise _refuse(
                    403, f"serial number {serial} is not configured on this gateway: add a zk-push terminal"
                )
        if terminal.allowed_sources and not _in_networks(address, terminal.allowed_sources):
            self.counts["refused_wrong_source"] += 1
            self.backend.problem(
                terminal,
                DeviceFault.PROTOCOL_ERROR,
                f"a request naming serial {serial} came from {address}, not from allowed_sources "
                f"({', '.join(terminal.allowed_sources)}): refused",
            )
            raise _refuse(403, f"serial number {serial} may not connect from {address}")
        state = self.states.get(terminal.name)
        if state is None or state.terminal != terminal:
            state = self.states[terminal.name] = TerminalState(terminal)
        return state

    def _contact(self, state: TerminalState) -> None:
        self.counts["requests"] += 1
        self.backend.contact(state.terminal, state.device_info())

    async def _meta(self, state: TerminalState) -> dict[str, Any]:
        if state.meta is None:
            meta = await self.backend.load_meta(state.terminal.name)
            serial = state.terminal.serial_number
            known = meta.get("serial_number")
            if known and known != serial:
                # The entry now names another terminal: the old one's stamps would make this
                # one skip its records.
                self.backend.problem(
                    state.terminal,
                    DeviceFault.DEVICE_REPLACED,
                    f"serial number changed from {known} to {serial}; its upload starts from the beginning",
                )
                meta = {}
            state.meta_unsaved = meta.get("serial_number") != serial
            meta["serial_number"] = serial
            meta.setdefault("push_stamps", {})
            state.meta = meta
        return state.meta

    # --- GET cdata: the handshake ----------------------------------------------------------
    async def handshake(self, request: web.Request) -> web.Response:
        state = self._identify(request)
        pushver = request.query.get("pushver")
        state.pushver = pushver[:20] if pushver else None
        self._contact(state)
        async with state.lock:
            meta = await self._meta(state)
        terminal = state.terminal
        offset = self.clock().astimezone(ZoneInfo(terminal.timezone)).utcoffset() or dt.timedelta(0)
        options = protocol.Options(
            stamps=dict(meta.get("push_stamps", {})),
            utc_offset=offset,
            realtime=terminal.realtime,
            delay=terminal.delay,
            error_delay=terminal.error_delay,
            trans_interval=terminal.trans_interval,
            tables=terminal.tables,
        )
        log.info(
            "push_handshake",
            device=terminal.name,
            serial=terminal.serial_number,
            address=_address(request),
            pushver=state.pushver,
            stamps=options.stamps,
        )
        return _ok(protocol.option_block(terminal.serial_number, options, pushver=state.pushver))

    # --- POST cdata: uploads ---------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        state = self._identify(request)
        table = (request.query.get("table") or "").upper()
        if table not in protocol.TABLES:
            self.counts["refused_unknown_table"] += 1
            shown = table[:20] or "(none)"
            raise _refuse(400, f"unknown table {shown}: this gateway takes ATTLOG, OPERLOG and ATTPHOTO")
        self._contact(state)
        body = await request.read()
        stamp = protocol.stamp_value(request.query.get("Stamp"))
        async with state.lock:
            if table == "ATTLOG":
                answer = await self._attlog(state, body, stamp)
            elif table == "OPERLOG":
                answer = await self._operlog(state, body, stamp)
            else:
                answer = await self._photo(state, body, stamp)
        return _ok(answer)

    async def photo(self, request: web.Request) -> web.Response:
        """POST /iclock/fdata: photos on firmware that sends them apart."""
        state = self._identify(request)
        self._contact(state)
        body = await request.read()
        async with state.lock:
            return _ok(await self._photo(state, body, protocol.stamp_value(request.query.get("Stamp"))))

    async def _attlog(self, state: TerminalState, body: bytes, stamp: str | None) -> str:
        terminal = state.terminal
        meta = await self._meta(state)
        parsed = await asyncio.to_thread(
            protocol.parse_attlog, body, terminal.encoding
        )  # CPU: not on the loop
        self._check_stamp(state, meta, "ATTLOG", stamp)
        try:
            committed = await self.backend.commit(terminal, parsed.punches, received_at=self.clock())
        except PushStoreRefusedError as exc:
            self.counts["refused_store"] += 1
            log.warning("push_upload_refused", device=terminal.name, error=str(exc), stored=exc.stored)
            raise _refuse(
                503, f"the gateway cannot store punches now ({exc}); send them again later"
            ) from None
        self.counts["punches_received"] += committed.received
        self.counts["punches_new"] += committed.new
        await self._finish(state, meta, "ATTLOG", stamp, parsed.bad)
        log.info(
            "push_attlog",
            device=terminal.name,
            lines=parsed.lines,
            stored=len(parsed.punches),
            new=committed.new,
            unparsed=len(parsed.bad),
            stamp=stamp,
        )
        return f"OK: {len(parsed.punches)}"

    async def _operlog(self, state: TerminalState, body: bytes, stamp: str | None) -> str:
        terminal = state.terminal
        meta = await self._meta(state)
        parsed = await asyncio.to_thread(protocol.parse_operlog, body, terminal.encoding)
        self.counts["biometric_lines"] += parsed.templates
        self.counts["operlog_lines"] += parsed.lines
        if "OPERLOG" not in terminal.tables:
            self.counts["operlog_ignored"] += parsed.lines
            await self._finish(state, meta, "OPERLOG", stamp, [])
            return f"OK: {parsed.lines}"
        self._check_stamp(state, meta, "OPERLOG", stamp)
        if parsed.users:
            await self._update_roster(state, parsed.users)
        for operation in parsed.operations:
            self._log_operation(state, operation)
        await self._finish(state, meta, "OPERLOG", stamp, parsed.bad)
        log.info(
            "push_operlog",
            device=terminal.name,
            lines=parsed.lines,
            operations=len(parsed.operations),
            users=len(parsed.users),
            biometric_not_kept=parsed.templates,
            other=parsed.other,
            unparsed=len(parsed.bad),
            stamp=stamp,
        )
        return f"OK: {parsed.lines}"

    async def _photo(self, state: TerminalState, body: bytes, stamp: str | None) -> str:
        self.counts["photos"] += 1
        self.counts["photo_bytes"] += len(body)
        meta = await self._meta(state)
        await self._finish(state, meta, "ATTPHOTO", stamp, [])
        log.debug("push_photo_not_kept", device=state.terminal.name, bytes=len(body))
        return "OK"

    def _check_stamp(self, state: TerminalState, meta: dict[str, Any], table: str, stamp: str | None) -> None:
        previous = meta.get("push_stamps", {}).get(table)
        if stamp is None or previous is None or int(stamp) >= int(previous):
            return
        self.backend.problem(
            state.terminal,
            DeviceFault.LOG_RESET,
            f"the terminal's {table} stamp went back from {previous} to {stamp}: its log started again "
            "(cleared, replaced or reset); what it sends is stored again, duplicates recognised by id",
        )

    async def _finish(
        self,
        state: TerminalState,
        meta: dict[str, Any],
        table: str,
        stamp: str | None,
        bad: Sequence[protocol.BadLine],
    ) -> None:
        """After the records are stored: keep the bad lines, persist the stamp (one meta write)."""
        changed = False
        if bad:
            self._keep_bad_lines(state, meta, table, bad)
            changed = True
        stamps: dict[str, str] = meta.setdefault("push_stamps", {})
        if stamp is not None and stamps.get(table) != stamp:
            stamps[table] = stamp
            changed = True
        if changed or state.meta_unsaved:
            try:
                await self.backend.save_meta(state.terminal.name, meta)
            except BaseException:
                state.meta = None  # read it again: what is in memory was never stored
                raise
            state.meta_unsaved = False

    def _keep_bad_lines(
        self, state: TerminalState, meta: dict[str, Any], table: str, bad: Sequence[protocol.BadLine]
    ) -> None:
        self.counts["unparsed_lines"] += len(bad)
        at = self.clock().isoformat()
        kept: list[dict[str, object]] = meta.setdefault("push_unparsed", [])
        kept.extend({**line.as_dict(), "table": table, "received_at": at} for line in bad)
        del kept[:-MAX_UNPARSED_KEPT]
        for line in bad:
            if state.budget.take():
                log.warning(
                    "push_line_unparsed",
                    device=state.terminal.name,
                    table=table,
                    line=line.number,
                    problem=line.problem,
                    text=line.text,
                )
        first = bad[0]
        self.backend.problem(
            state.terminal,
            DeviceFault.PROTOCOL_ERROR,
            f"{len(bad)} {table} line(s) could not be read and were kept aside (first: line {first.number}, "
            f"{first.problem}); the rest of the upload was stored",
        )

    async def _update_roster(self, state: TerminalState, users: Sequence[protocol.User]) -> None:
        key = state.terminal.name + ROSTER_SUFFIX
        stored = await self.backend.load_meta(key)
        roster: dict[str, Any] = stored.get("users", {}) if isinstance(stored.get("users"), dict) else {}
        for user in users:
            if user.pin in roster or len(roster) < MAX_ROSTER:
                roster[user.pin] = user.as_dict()
            else:
                self.counts["roster_full"] += 1
        await self.backend.save_meta(key, {"serial_number": state.terminal.serial_number, "users": roster})

    def _log_operation(self, state: TerminalState, operation: protocol.Operation) -> None:
        # Code 3 is an alarm; object 55 means the terminal reports being opened or torn off the wall.
        tamper = operation.code == 3 and operation.target == "55"
        if not tamper and not state.budget.take():
            return
        (log.warning if tamper else log.info)(
            "push_terminal_tampered" if tamper else "push_operation",
            device=state.terminal.name,
            code=operation.code,
            admin=operation.admin,
            time=operation.time.isoformat() if operation.time else None,
            target=operation.target,
        )

    # --- heartbeats and command results ----------------------------------------------------
    async def heartbeat(self, request: web.Request) -> web.Response:
        state = self._identify(request)
        info = request.query.get("INFO")
        if info:
            self._remember(state, protocol.parse_info(info))
        self._contact(state)
        lines = await self._pending_commands(state)
        if not lines:
            return _ok()
        return web.Response(body=commands.answer_body(lines, state.terminal.encoding), content_type=TEXT)

    async def _pending_commands(self, state: TerminalState) -> list[str]:
        if self.commands is None or state.terminal.quarantined:
            return []
        try:
            return await self.commands.next_batch(state.terminal.name)
        except Exception as exc:  # the buffer refused, say: no commands this time, and say why
            self.counts["command_queue_errors"] += 1
            if state.budget.take():
                log.error(
                    "push_commands_unavailable",
                    device=state.terminal.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
            return []

    async def command_results(self, request: web.Request) -> web.Response:
        state = self._identify(request)
        self._contact(state)
        body = await request.read()
        parsed = protocol.parse_devicecmd(body, state.terminal.encoding)
        self._remember(state, parsed.facts)
        for result in parsed.results:
            self.counts["command_results"] += 1
            if state.budget.take():
                log.info(
                    "push_command_result",
                    device=state.terminal.name,
                    id=result.id,
                    returned=result.returned,
                    command=result.command,
                )
        if parsed.bad:
            self.counts["unparsed_lines"] += len(parsed.bad)
            if state.budget.take():
                first = parsed.bad[0]
                log.warning(
                    "push_line_unparsed",
                    device=state.terminal.name,
                    table="devicecmd",
                    line=first.number,
                    problem=first.problem,
                    text=first.text,
                    lines=len(parsed.bad),
                )
        if self.commands is not None and not state.terminal.quarantined and parsed.results:
            # Recorded before OK: should this fail, the terminal posts the results again.
            await self.commands.record_results(
                state.terminal.name, commands.parse_results(body, state.terminal.encoding)
            )
        return _ok()

    def _remember(self, state: TerminalState, facts: dict[str, str]) -> None:
        for key, value in facts.items():
            if key in state.facts or len(state.facts) < MAX_INFO:
                state.facts[key] = value


RECEIVER: web.AppKey[Receiver] = web.AppKey("zk_push_receiver", Receiver)


def build_receiver(
    terminals: Sequence[PushTerminal],
    backend: PushBackend,
    *,
    clock: Clock = _utc_now,
    command_source: commands.CommandSource | None = None,
) -> web.Application:
    """The iclock sub-application; mount it with `app.add_subapp("/iclock/", …)`. Without
    `command_source` every heartbeat is answered `OK`."""
    receiver = Receiver(terminals, backend, clock=clock, command_source=command_source)
    app = web.Application()
    app[RECEIVER] = receiver
    routes: list[web.AbstractRouteDef] = []
    for suffix in ("", ".aspx"):
        routes += [
            web.get(f"/cdata{suffix}", receiver.handshake, allow_head=False),
            web.post(f"/cdata{suffix}", receiver.upload),
            web.get(f"/getrequest{suffix}", receiver.heartbeat, allow_head=False),
            web.post(f"/devicecmd{suffix}", receiver.command_results),
            web.post(f"/fdata{suffix}", receiver.photo),
        ]
    app.add_routes(routes)
    return app
