"""The buffer's tables as the store sees them: names, never a definition.

The single definition of the buffer's schema is `punchgate.sync.migrations`: frozen SQL steps,
numbered by `PRAGMA user_version`, that every file (new or years old) goes through in order.
The store still wants SQLAlchemy objects to build its queries, so this module names the tables
and only the columns the store reads or writes, as lightweight `table()` / `column()` clauses.
They carry no types, constraints, defaults or indexes and belong to no `MetaData`, so nothing
can `create_all` from them: there is no second CREATE path, and no second place where a column
could be added, renamed or typed differently from what the migrations built.

Invariants (checked by `missing_columns` at every open, inside the migration transaction, and
by tests/sync/test_buffer_schema.py against freshly migrated and upgraded files):

* every column named here exists in the schema the migrations produce;
* every column of the migrated schema is named here: the buffer stores nothing the store
  does not write, and the store writes nothing it does not need (see the v2 migration);
* raw SQL in the store names columns through these handles (`{P.device}` in an f-string),
  so a column the store uses cannot be spelled outside this module.
"""

from __future__ import annotations

from sqlalchemy import Connection, TableClause, column, table

# The punches waiting for (or kept after) delivery. `payload` is the contract record as JSON,
# rendered once at insert; everything the broker receives comes from it.
punches = table(
    "punches",
    column("pk"),  # insertion order: "oldest first" is lowest pk; the forwarder's drain cursor
    column("id"),  # stable record id: dedupe (unique index)
    column("device"),  # configured terminal name: per-device counts, batches, replay filter
    column("user_id"),  # kept for searches by user and time (no reader yet; see migration v2)
    column("utc_time"),  # ISO 8601 UTC instant; kept with user_id
    column("source"),  # poll / live / manual: live punches are sent without waiting for a batch
    column("payload"),  # the contract record (JSON)
    column("raw"),  # the terminal's own record bytes: evidence for audits (see migration v2)
    column("stored_at"),  # unix time of the durable commit: oldest pending age
    column("delivered_at"),  # unix time of the PUBACK, NULL while pending: delivery, replay, purge
    column("sent_at"),  # central delivery: last PUBACK while unconfirmed; NULL: not sent (migration v5)
)

# Punches committed before their dedupe (migration v8; punchgate.sync.buffer_staging): the
# columns an insert into `punches` writes, moved there later in staging order.
staged_punches = table(
    "staged_punches",
    column("pk"),  # staging order
    column("id"),
    column("device"),
    column("user_id"),
    column("utc_time"),
    column("source"),
    column("payload"),
    column("raw"),
    column("stored_at"),
)

# Per-device batch sequence numbers, reserved in blocks.
batch_seq = table("batch_seq", column("device"), column("reserved_until"))

# What the gateway remembers about a terminal between restarts (JSON object).
device_meta = table("device_meta", column("device"), column("data"), column("updated_at"))

# Which gateway the file belongs to, when it got that identity, and how many punches were ever
# stored in it (one row; see punchgate.sync.buffer_identity and migration v3).
identity = table("identity", column("singleton"), column("gateway_id"), column("created"), column("stored"))

# Make-up punches as entered and decided (migration v4; punchgate.sync.manual).
manual_punches = table(
    "manual_punches",
    column("entry_id"),
    column("device"),
    column("serial"),
    column("user_id"),
    column("local_time"),
    column("utc_time"),
    column("state"),
    column("reason_code"),
    column("reason"),
    column("entered_by"),
    column("entered_at"),
    column("status"),
    column("decided_by"),
    column("decided_at"),
    column("note"),
    column("punch_id"),
)

# The audit hash chain and where a pruned chain starts (migration v4; punchgate.sync.audit).
audit = table("audit", column("seq"), column("kind"), column("entry"), column("hash"))
audit_anchor = table("audit_anchor", column("singleton"), column("seq"), column("hash"))

# Remote commands the gateway accepted, and each one's answer per terminal (migration v6;
# punchgate.sync.command_store).
command_requests = table(
    "command_requests",
    column("id"),
    column("command"),
    column("requester"),
    column("request"),
    column("reply_topic"),
    column("correlation"),
    column("received_at"),
    column("expires_at"),
    column("done_at"),
)
command_targets = table(
    "command_targets",
    column("id"),
    column("target"),
    column("status"),
    column("response"),
    column("published"),
    column("updated_at"),
)

TABLES: tuple[TableClause, ...] = (
    punches,
    batch_seq,
    device_meta,
    identity,
    manual_punches,
    audit,
    audit_anchor,
    command_requests,
    command_targets,
    staged_punches,
)


def file_columns(conn: Connection, name: str) -> list[str]:
    """The columns table `name` has in the open file, in order ([] when there is no such table)."""
    # PRAGMA takes no bound parameters; `name` is one of our own table names.
    return [str(row[1]) for row in conn.exec_driver_sql(f"PRAGMA table_info({name})")]


def missing_columns(conn: Connection) -> list[str]:
    """`table.column` for every column named here that the open file lacks ([] when in step)."""
    missing = []
    for handle in TABLES:
        present = set(file_columns(conn, handle.name))
        missing += [f"{handle.name}.{c.name}" for c in handle.columns if c.name not in present]
    return missing
