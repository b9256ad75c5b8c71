"""Committing one flush of the sink: in one transaction, whatever the database does meanwhile.

* A database that is down (or a connection it dropped) is retried with a doubling backoff up to
  `RETRY_MAX` seconds; nothing is acknowledged meanwhile, and stopping gives up (None).
* A flush the database refuses for its content (a value out of range, say) is written again
  one message at a time, and the one message it refuses goes to the dead-letter table with the
  database's reason: the sink never stops on bad input.
"""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa
import structlog
from sqlalchemy import Engine

from punchgate.sync.sink.inbox import Received
from punchgate.sync.sink.items import DeadLetter, Item, Written
from punchgate.sync.sink.stats import SinkStats
from punchgate.sync.sink.store_flush import write

log = structlog.get_logger(__name__)

RETRY_MAX = 10.0  # seconds between attempts while the database is unreachable


def note_db_failure(stats: SinkStats, exc: Exception) -> None:
    """Count and log a database that could not be reached."""
    stats.db_failures += 1
    stats.last_db_error = str(exc).splitlines()[0][:300]
    log.error("sink_database_unavailable", error=stats.last_db_error)


class Committer:
    """Writes flushes through `engine`, counting failures in `stats`; `stopping` ends the retries."""

    def __init__(self, engine: Engine, stats: SinkStats, stopping: threading.Event) -> None:
        self.engine = engine
        self.stats = stats
        self._stopping = stopping

    def commit(self, pairs: list[tuple[Received, Item]]) -> Written | None:
        """Write the flush in one transaction; retried while the database is unreachable,
        split up when it refuses the content. None: stopping before it could be written."""
        delay = 0.5
        while True:
            try:
                return self._transaction([item for _m, item in pairs])
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                note_db_failure(self.stats, exc)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    note_db_failure(self.stats, exc)
                else:
                    return self._one_by_one(pairs, exc)
            if self._stopping.wait(delay):
                return None
            delay = min(RETRY_MAX, delay * 2)

    def _transaction(self, items: list[Item]) -> Written:
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            return write(conn, items, now)

    def _one_by_one(self, pairs: list[tuple[Received, Item]], first: Exception) -> Written:
        """The database refused the flush for its content: each message alone, and the one it
        refuses goes to the dead-letter table with the database's reason."""
        log.warning("sink_flush_refused", error=str(first).splitlines()[0][:300], messages=len(pairs))
        total = Written()
        for message, item in pairs:
            try:
                written = self._transaction([item])
            except sa.exc.DBAPIError as exc:
                if (
                    isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
                    or exc.connection_invalidated
                ):
                    raise
                reason = f"refused by the database: {str(exc.orig or exc).splitlines()[0][:300]}"
                log.warning("sink_dead_letter", topic=message.topic, reason=reason)
                written = self._transaction([DeadLetter(message.topic, message.payload, reason)])
            total.punches_new += written.punches_new
            total.punches_repeated += written.punches_repeated
            total.dead_letters += written.dead_letters
            total.digests_changed |= written.digests_changed
            for base, ids in written.confirm.items():
                total.confirm.setdefault(base, []).extend(ids)
        return total
