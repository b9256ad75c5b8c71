"""The upload stamps: what a push terminal has delivered, remembered in its meta.

A terminal sends each table's records with a `Stamp`; the handshake hands the stored stamps
back, and the terminal sends only what is newer. So a stamp is stored only after the records
posted with it are (`StampKeeper.persist`, called by the upload handlers once the backend has
committed). Lines of the upload that could not be read are kept in the same meta write (the
newest `MAX_UNPARSED_KEPT`, in `push_unparsed`) and reported as `protocol_error`. A stamp lower
than the stored one means the terminal's log started again (`log_reset`); the lower one is
stored, so nothing it sends from then on is skipped.

A stamp that only moved forward, with nothing else to keep, is saved at most every
`STAMP_SAVE_EVERY` seconds per terminal, by an upload or a heartbeat (`flush`), and when the
listener closes: a backlog of 200 posts would otherwise cost 200 more fsyncs, and 200 terminals
punching in real time one more fsync per punch, under the buffer's write lock the next
terminal's commit waits for. The newer stamp is held in memory and handed out at the
handshake. This never costs a punch: the records were committed before `OK`, and a stamp saved
late is an older stamp, so after a crash the terminal sends the records of those seconds again
and their ids recognise them. A stamp that went back (`log_reset`) and bad lines are saved
before `OK`: a saved stamp is never ahead of the terminal's log, and kept text is never lost.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push import protocol
from punchgate.drivers.zk_push.backend import PushBackend
from punchgate.drivers.zk_push.terminal_state import TerminalState

log = structlog.get_logger(__name__)

MAX_UNPARSED_KEPT = 100  # unparsable lines kept per terminal (the newest)
STAMP_SAVE_EVERY = 30.0  # seconds: a stamp that only moved forward is saved at most this often


class StampKeeper:
    """Checks and stores the stamps of one receiver's terminals (through its backend)."""

    def __init__(self, backend: PushBackend, counts: Counter[str], clock: Callable[[], dt.datetime]) -> None:
        self.backend = backend
        self.counts = counts
        self.clock = clock

    def check(self, state: TerminalState, meta: dict[str, Any], table: str, stamp: str | None) -> None:
        """Report `log_reset` when `stamp` is lower than the one stored for `table`."""
        previous = meta.get("push_stamps", {}).get(table)
        if stamp is None or previous is None or int(stamp) >= int(previous):
            return
        self.backend.problem(
            state.terminal,
            DeviceFault.LOG_RESET,
            f"the terminal's {table} stamp went back from {previous} to {stamp}: its log started again "
            "(cleared, replaced or reset); what it sends is stored again, duplicates recognised by id",
        )

    async def persist(
        self,
        state: TerminalState,
        meta: dict[str, Any],
        table: str,
        stamp: str | None,
        bad: Sequence[protocol.BadLine],
    ) -> None:
        """After the records are stored: keep the bad lines, persist the stamp (one meta write;
        a stamp that only moved forward may wait, see the module docstring)."""
        must_save = state.meta_unsaved
        if bad:
            self._keep_bad_lines(state, meta, table, bad)
            must_save = True
        stamps: dict[str, str] = meta.setdefault("push_stamps", {})
        if stamp is not None and stamps.get(table) != stamp:
            stamps[table] = stamp
            saved = state.saved_stamps.get(table)
            if saved is not None and int(stamp) < int(saved):
                must_save = True  # the log started again: the saved stamp must never stay ahead of it
            else:
                state.stamps_unsaved = True
        if must_save or self.due(state):
            await self.save(state, meta)

    @staticmethod
    def due(state: TerminalState) -> bool:
        """Stamps are held in memory and the last save is STAMP_SAVE_EVERY seconds old."""
        return state.stamps_unsaved and time.monotonic() - state.saved_at >= STAMP_SAVE_EVERY

    async def flush(self, state: TerminalState) -> None:
        """Save stamps held in memory (the caller holds the terminal's lock)."""
        if state.stamps_unsaved and state.meta is not None:
            await self.save(state, state.meta)

    async def save(self, state: TerminalState, meta: dict[str, Any]) -> None:
        try:
            await self.backend.save_meta(state.terminal.name, meta)
        except BaseException:
            state.meta = None  # read it again: what is in memory was never stored
            raise
        state.meta_unsaved = state.stamps_unsaved = False
        state.saved_stamps = dict(meta.get("push_stamps", {}))
        state.saved_at = time.monotonic()

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
