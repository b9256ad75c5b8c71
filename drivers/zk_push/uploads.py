"""The tables push terminals upload (`POST cdata?table=…`): ATTLOG, OPERLOG and ATTPHOTO.

* ATTLOG: the punches go to the backend's `commit` (which parses the body in the thread that
  commits, see `PushBackend.commit`); only once it returned (durably stored)
  is the stamp persisted and `OK: <punches stored>` answered. A refusing buffer is a 503: the
  terminal keeps its records and sends them again.
* OPERLOG: USER lines become the terminal's user list (meta `<device>/roster`, at most
  `MAX_ROSTER` users; a user's password and card number are never kept), operations are logged
  (a tamper alarm always, the rest within the log budget); fingerprint and other biometric
  lines are only counted. A terminal whose entry does not take OPERLOG has it counted and
  acknowledged.
* ATTPHOTO: counted and acknowledged, never kept.

The caller holds the terminal's lock; each handler returns the text of the `OK` answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk_push import attlog, protocol
from punchgate.drivers.zk_push.answers import refuse
from punchgate.drivers.zk_push.backend import PushBackend, PushStoreRefusedError
from punchgate.drivers.zk_push.stamps import StampKeeper
from punchgate.drivers.zk_push.terminal_state import TerminalState

log = structlog.get_logger(__name__)

MAX_ROSTER = 50_000  # users remembered per terminal
ROSTER_SUFFIX = "/roster"  # meta key of a terminal's user list: `<device>/roster`


class Uploads:
    """Stores what terminals upload, through the backend, and moves their stamps."""

    def __init__(self, backend: PushBackend, counts: Counter[str], clock: Callable[[], dt.datetime]) -> None:
        self.backend = backend
        self.counts = counts
        self.clock = clock
        self.stamps = StampKeeper(backend, counts, clock)

    async def attlog(self, state: TerminalState, body: bytes, stamp: str | None) -> str:
        terminal = state.terminal
        meta = await state.loaded_meta(self.backend)
        self.stamps.check(state, meta, "ATTLOG", stamp)
        parses: list[attlog.AttlogParse] = []

        def read() -> list[RawPunch]:
            # Called by the backend in the thread that commits (a backlog post's parse is CPU
            # the event loop must not wait for, and one hand-off there and back costs less
            # than two).
            parses.append(attlog.parse_attlog(body, terminal.encoding))
            return parses[-1].punches

        try:
            committed = await self.backend.commit(terminal, read, received_at=self.clock())
        except PushStoreRefusedError as exc:
            self.counts["refused_store"] += 1
            log.warning("push_upload_refused", device=terminal.name, error=str(exc), stored=exc.stored)
            raise refuse(
                503, f"the gateway cannot store punches now ({exc}); send them again later"
            ) from None
        parsed = parses[-1] if parses else attlog.parse_attlog(body, terminal.encoding)
        self.counts["punches_received"] += committed.received
        self.counts["punches_new"] += committed.new
        self.counts["punches_staged"] += committed.staged
        await self.stamps.persist(state, meta, "ATTLOG", stamp, parsed.bad)
        log.info(
            "push_attlog",
            device=terminal.name,
            lines=parsed.lines,
            stored=len(parsed.punches),
            new=committed.new,
            staged=committed.staged,
            unparsed=len(parsed.bad),
            stamp=stamp,
        )
        return f"OK: {len(parsed.punches)}"

    async def operlog(self, state: TerminalState, body: bytes, stamp: str | None) -> str:
        terminal = state.terminal
        meta = await state.loaded_meta(self.backend)
        parsed = await asyncio.to_thread(protocol.parse_operlog, body, terminal.encoding)
        self.counts["biometric_lines"] += parsed.templates
        self.counts["operlog_lines"] += parsed.lines
        if "OPERLOG" not in terminal.tables:
            self.counts["operlog_ignored"] += parsed.lines
            await self.stamps.persist(state, meta, "OPERLOG", stamp, [])
            return f"OK: {parsed.lines}"
        self.stamps.check(state, meta, "OPERLOG", stamp)
        if parsed.users:
            await self._update_roster(state, parsed.users)
        for operation in parsed.operations:
            self._log_operation(state, operation)
        await self.stamps.persist(state, meta, "OPERLOG", stamp, parsed.bad)
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

    async def photo(self, state: TerminalState, body: bytes, stamp: str | None) -> str:
        self.counts["photos"] += 1
        self.counts["photo_bytes"] += len(body)
        meta = await state.loaded_meta(self.backend)
        await self.stamps.persist(state, meta, "ATTPHOTO", stamp, [])
        log.debug("push_photo_not_kept", device=state.terminal.name, bytes=len(body))
        return "OK"

    async def _update_roster(self, state: TerminalState, users: Sequence[protocol.User]) -> None:
        key = state.terminal.name + ROSTER_SUFFIX
        stored = await self.backend.load_meta(key)
        roster: dict[str, Any] = stored.get("users", {}) if isinstance(stored.get("users"), dict) else {}
        for user in users:
            if user.pin in roster or len(roster) < MAX_ROSTER:
                roster[user.pin] = user.as_dict()
            else:
                self.counts["roster_full"] += 1
        # When the list last changed: users.list says how old the answer it gives from it is.
        updated_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        await self.backend.save_meta(
            key, {"serial_number": state.terminal.serial_number, "users": roster, "updated_at": updated_at}
        )

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
