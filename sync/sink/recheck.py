"""The sink's periodic reconciliation: digest days that did not match are compared again.

Every `check_interval` seconds (at once after digests changed) the writer thread rechecks the
days not known to match (`reconcile.recheck`) and counts those mismatching for longer than
`mismatch_grace` (younger ones are still being delivered) into the `mismatching_days` gauge.
"""

from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa
import structlog
from sqlalchemy import Engine

from punchgate.sync.sink.commit import note_db_failure
from punchgate.sync.sink.reconcile import mismatching_days, recheck
from punchgate.sync.sink.settings import SinkSettings
from punchgate.sync.sink.stats import SinkStats

log = structlog.get_logger(__name__)


class Rechecks:
    """When the next recheck is due, and running it."""

    def __init__(self, engine: Engine, settings: SinkSettings, stats: SinkStats) -> None:
        self.engine = engine
        self.settings = settings
        self.stats = stats
        self._next_check = 0.0

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
                changed = [c for c in recheck(conn, utc_now) if not c.ok]
                grace = utc_now - dt.timedelta(seconds=self.settings.mismatch_grace)
                self.stats.mismatching_days = mismatching_days(conn, older_than=grace)
        except sa.exc.DBAPIError as exc:
            note_db_failure(self.stats, exc)
            return
        if self.stats.mismatching_days:
            log.warning(
                "sink_digest_mismatch",
                days=self.stats.mismatching_days,
                first=[f"{c.gateway}/{c.device} {c.day}: {c.status}" for c in changed[:5]],
            )
