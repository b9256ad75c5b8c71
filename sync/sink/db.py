"""The sink's database, under one name: `from punchgate.sync.sink import db`, then `db.write(...)`.

The work is done in:

* `engine`: opening the database (SQLite or PostgreSQL) and migrating it (`create`, `upgrade`);
* `items`: what a flush carries (`PunchBatch`, `DeviceState`, ..., `Item`) and `Written`;
* `store_flush`: storing a flush in the caller's transaction, each punch once (`write`, `punch_row`);
* `upserts`: the latest-wins and keep-once rules of states, events and digests;
* `reconcile`: the digest days compared with the stored punches (`recheck`, `extra_days`, ...).
"""

from __future__ import annotations

from punchgate.sync.sink.engine import DEFAULT_DB, MIGRATIONS, create, current_revision, database_url, upgrade
from punchgate.sync.sink.items import (
    DeadLetter,
    DeviceState,
    Digests,
    Event,
    GatewayState,
    Item,
    PunchBatch,
    Written,
)
from punchgate.sync.sink.reconcile import DayCheck, counts, extra_days, mismatching_days, recheck
from punchgate.sync.sink.store_flush import punch_row, write

__all__ = [
    "DEFAULT_DB",
    "MIGRATIONS",
    "DayCheck",
    "DeadLetter",
    "DeviceState",
    "Digests",
    "Event",
    "GatewayState",
    "Item",
    "PunchBatch",
    "Written",
    "counts",
    "create",
    "current_revision",
    "database_url",
    "extra_days",
    "mismatching_days",
    "punch_row",
    "recheck",
    "upgrade",
    "write",
]
