"""The sink's periodic reconciliation: digest days that did not match are compared again.

Every `check_interval` seconds (at once after digests changed) the writer thread rechecks the
days not known to match (`reconcile.recheck`) and counts those mismatching for longer than
`mismatch_grace` (younger ones are still being delivered) into the `mismatching_days` gauge.
The first check after start, and one an hour after that, also counts every matching day's
punches again (`reconcile.reopen_changed_counts`, one statement): rows lost while nobody looked
(a database restored from a backup, rows deleted by hand) show up then. The days past the
grace that lack punches go to `resend.ResendRequests`, which asks their gateway to send the day
again.
"""

from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa
import structlog
from sqlalchemy import Engine

from punchgate.sync.sink.commit import note_db_failure
from punchgate.sync.sink.reconcile import (
    DayCheck,
    gap_days,
    mismatching_days,
    recheck,
    reopen_changed_counts,
)
from punchgate.sync.sink.resend import ResendRequests
from punchgate.sync.sink.settings import SinkSettings
from punchgate.sync.sink.stats import SinkStats

log = structlog.get_logger(__name__)

# Seconds between recounts of the days known to match: a day's ids are compared again only when
# its digest changes, so this is what notices rows lost at central; cheap, but not free.
RECOUNT_INTERVAL = 3600.0


class Rechecks:
    """When the next recheck is due, and running it."""

    def __init__(
        self, engine: Engine, settings: SinkSettings, stats: SinkStats, resends: ResendRequests | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.stats = stats
        self.resends = resends
        self._next_check = 0.0
        self._next_recount = 0.0

    def soon(self) -> None:
        """Make the next `maybe_recheck` run (digests changed)."""
        self._next_check = 0.0

    def maybe_recheck(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.settings.check_interval
        try:
            with self.engine.begin() as conn:
                utc_now = dt.datetime.now(dt.UTC)
                recount = now >= self._next_recount
                if recount:
                    reopened = reopen_changed_counts(conn)
                    if reopened:
                        log.warning("sink_matched_days_changed", days=reopened)
                changed = [c for c in recheck(conn, utc_now) if not c.ok]
                grace = utc_now - dt.timedelta(seconds=self.settings.mismatch_grace)
                self.stats.mismatching_days = mismatching_days(conn, older_than=grace)
                asking = self.resends is not None and self.settings.resend
                gaps: list[DayCheck] = gap_days(conn, older_than=grace) if asking else []
        except sa.exc.DBAPIError as exc:
            note_db_failure(self.stats, exc)
            return
        if recount:
            self._next_recount = now + RECOUNT_INTERVAL
        if self.resends is not None and gaps:
            # Only after the commit: a request for a check whose transaction failed would be
            # rate-limited when the next check finds the same gap.
            self.resends.ask(gaps)
        if self.stats.mismatching_days:
            log.warning(
                "sink_digest_mismatch",
                days=self.stats.mismatching_days,
                first=[f"{c.gateway}/{c.device} {c.day}: {c.status}" for c in changed[:5]],
            )
