"""The upload stamps: what a push terminal has delivered, remembered in its meta.

A terminal sends each table's records with a `Stamp`; the handshake hands the stored stamps
back, and the terminal sends only what is newer. So a stamp is stored only after the records
posted with it are (`StampKeeper.persist`, called by the upload handlers once the backend has
committed). Lines of the upload that could not be read are kept in the same meta write (the
newest `MAX_UNPARSED_KEPT`, in `push_unparsed`) and reported as `protocol_error`. A stamp lower
than the stored one means the terminal's log started again (`log_reset`); the lower one is
stored, so nothing it sends from then on is skipped.
"""

from __future__ import annotations

import datetime as dt
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
