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

* A stamp is persisted only after the records posted with it are durably stored. A stamp that
  went back, and lines kept aside, are persisted before `OK` is answered; a stamp that only
  moved forward at most every 30 s per terminal (by an upload or a heartbeat) and when the
  listener closes (`stamps.py`): one saved late is an older one, so the terminal sends those
  records again and their ids recognise them. A failure anywhere before the commit answers an
  error: the terminal keeps its records and sends them again, and ids make the repeat harmless.
* A line that cannot be parsed never costs the rest of its body: it is kept with its text
  in the terminal's meta (`push_unparsed`, the newest `stamps.MAX_UNPARSED_KEPT`), logged,
  counted, and reported as `protocol_error`; the answer counts what was stored.
* A stamp lower than the one stored means the terminal's log started again (cleared,
  replaced, factory reset): `log_reset`, and the lower stamp is stored, so nothing it sends
  from now on is skipped.
* Fingerprint and other biometric lines are counted, never kept or logged; a user's password
  and card number are never kept.
* Requests of one terminal that change what is remembered about it run one at a time.
* Commands (`commands.py`) come from a `CommandSource` (the gateway's durable queue): the lines
  of an answer are recorded as sent before it leaves, results before `OK` is answered. A queue
  that cannot answer costs the heartbeat nothing: it is answered `OK`, without commands.

This module holds `Receiver` (the endpoints, which identify the terminal, count the contact
and hand the work on) and `build_receiver`, which routes them. The parts it wires together:

    gatekeeper        who is asking: serial number, configured or unknown, allowed source
    terminal_state    what is held per terminal between requests: meta, facts, lock, log budget
    uploads           ATTLOG, OPERLOG (the user list, operations) and ATTPHOTO
    stamps            stamps checked (log_reset) and persisted with the lines kept aside
    command_exchange  heartbeat commands from the queue, devicecmd results into it
    answers           the plain-text answers and refusals
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from punchgate.drivers.zk_push import commands, protocol
from punchgate.drivers.zk_push.answers import TEXT, ok, refuse
from punchgate.drivers.zk_push.backend import PushBackend, PushTerminal
from punchgate.drivers.zk_push.command_exchange import CommandExchange
from punchgate.drivers.zk_push.gatekeeper import Gatekeeper, client_address
from punchgate.drivers.zk_push.terminal_state import TerminalState
from punchgate.drivers.zk_push.uploads import Uploads

log = structlog.get_logger(__name__)

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
        self.backend = backend
        self.clock = clock
        self.counts: Counter[str] = Counter()  # requests, refusals, lines: see docs/zk-push.md
        self.gatekeeper = Gatekeeper(terminals, backend, self.counts)
        self.uploads = Uploads(backend, self.counts, clock)
        self.command_exchange = CommandExchange(command_source, self.counts)

    def _contact(self, state: TerminalState) -> None:
        self.counts["requests"] += 1
        self.backend.contact(state.terminal, state.device_info())

    # --- GET cdata: the handshake ----------------------------------------------------------
    async def handshake(self, request: web.Request) -> web.Response:
        state = self.gatekeeper.identify(request)
        pushver = request.query.get("pushver")
        state.pushver = pushver[:20] if pushver else None
        self._contact(state)
        async with state.lock:
            meta = await state.loaded_meta(self.backend)
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
            address=client_address(request),
            pushver=state.pushver,
            stamps=options.stamps,
        )
        return ok(protocol.option_block(terminal.serial_number, options, pushver=state.pushver))

    # --- POST cdata, fdata: uploads ----------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        state = self.gatekeeper.identify(request)
        table = (request.query.get("table") or "").upper()
        if table not in protocol.TABLES:
            self.counts["refused_unknown_table"] += 1
            shown = table[:20] or "(none)"
            raise refuse(400, f"unknown table {shown}: this gateway takes ATTLOG, OPERLOG and ATTPHOTO")
        self._contact(state)
        body = await request.read()
        stamp = protocol.stamp_value(request.query.get("Stamp"))
        async with state.lock:
            if table == "ATTLOG":
                answer = await self.uploads.attlog(state, body, stamp)
            elif table == "OPERLOG":
                answer = await self.uploads.operlog(state, body, stamp)
            else:
                answer = await self.uploads.photo(state, body, stamp)
        return ok(answer)

    async def photo(self, request: web.Request) -> web.Response:
        """POST /iclock/fdata: photos on firmware that sends them apart."""
        state = self.gatekeeper.identify(request)
        self._contact(state)
        body = await request.read()
        async with state.lock:
            return ok(await self.uploads.photo(state, body, protocol.stamp_value(request.query.get("Stamp"))))

    # --- heartbeats and command results ----------------------------------------------------
    async def heartbeat(self, request: web.Request) -> web.Response:
        state = self.gatekeeper.identify(request)
        info = request.query.get("INFO")
        if info:
            state.remember(protocol.parse_info(info))
        self._contact(state)
        if self.uploads.stamps.due(state):  # stamps held in memory long enough: save them now
            async with state.lock:
                await self.uploads.stamps.flush(state)
        lines = await self.command_exchange.pending(state)
        if not lines:
            return ok()
        return web.Response(body=commands.answer_body(lines, state.terminal.encoding), content_type=TEXT)

    async def command_results(self, request: web.Request) -> web.Response:
        state = self.gatekeeper.identify(request)
        self._contact(state)
        body = await request.read()
        await self.command_exchange.take_results(state, body)
        return ok()

    async def flush(self) -> None:
        """Save the stamps held in memory (the listener closes): the terminals' next
        handshakes then resume from them instead of sending those records again."""
        for state in list(self.gatekeeper.states.values()):
            if state.stamps_unsaved:
                async with state.lock:
                    await self.uploads.stamps.flush(state)


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
