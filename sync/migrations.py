"""Versioned schema steps for the SQLite buffer: the one definition of its schema.

Why not alembic: the buffer is one embedded file owned by one daemon, its schema is a few
tables, and every site upgrades in place unattended. A list of plain SQL steps, numbered by
SQLite's own `PRAGMA user_version` and each applied inside the same transaction as the
version bump (SQLite DDL is transactional), gives the same guarantees without a migration
environment, script directory or extra dependency.

Invariants:

* These steps are the only place the schema is written down. The store names the tables and
  columns it uses through `punchgate.sync.buffer_schema` (names only, no types or DDL) and
  checks them against the migrated file at every open; nothing else creates or alters a table.
* Steps are frozen SQL, never derived from the current code, so an old file always goes
  through the same path as it did when the step was released. Append only: a released step
  is never edited; a change is a new step.
* `migrate` runs every pending step and its version bump in the caller's one transaction: a
  file is either fully at the new version or untouched (a failed step rolls back all).
* A step never loses a punch: a table rebuild copies every row (same pk, same payload, same
  delivery state) and checks the count before it replaces the old table.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

Step = Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    conn.exec_driver_sql(
        """
        CREATE TABLE punches (
            pk INTEGER PRIMARY KEY,           -- insertion order: 'oldest first' means lowest pk
            id TEXT NOT NULL,                 -- stable record id (docs/mqtt-contract.md)
            device TEXT NOT NULL,
            device_serial TEXT NOT NULL,
            user_id TEXT NOT NULL,
            local_time TEXT NOT NULL,
            utc_time TEXT NOT NULL,
            utc_offset_seconds INTEGER NOT NULL,
            state INTEGER NOT NULL,
            state_name TEXT,
            verify INTEGER NOT NULL,
            verify_name TEXT,
            work_code INTEGER NOT NULL,
            source TEXT NOT NULL,
            historical INTEGER NOT NULL,
            flags TEXT NOT NULL,              -- comma-separated time flags
            raw BLOB NOT NULL,
            payload TEXT NOT NULL,            -- the contract record as JSON, rendered once at insert
            stored_at REAL NOT NULL,          -- unix time of the durable commit
            delivered_at REAL                 -- unix time of the PUBACK; NULL while pending
        )
        """
    )
    conn.exec_driver_sql("CREATE UNIQUE INDEX ux_punches_id ON punches (id)")
    # Partial indexes keep the outbox queries proportional to what is pending, not to history.
    conn.exec_driver_sql("CREATE INDEX ix_punches_pending ON punches (pk) WHERE delivered_at IS NULL")
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_pending_device ON punches (device) WHERE delivered_at IS NULL"
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_delivered ON punches (delivered_at) WHERE delivered_at IS NOT NULL"
    )
    conn.exec_driver_sql(
        """
        CREATE TABLE batch_seq (
            device TEXT PRIMARY KEY,
            reserved_until INTEGER NOT NULL   -- highest batch seq handed out or reserved
        )
        """
    )
    conn.exec_driver_sql(
        """
        CREATE TABLE device_meta (
            device TEXT PRIMARY KEY,
            data TEXT NOT NULL,               -- JSON object
            updated_at REAL NOT NULL
        )
        """
    )


class MigrationError(Exception):
    """A step found the file in a state it must not commit (the transaction is rolled back)."""


def _v2_keep_only_what_is_read(conn: Connection) -> None:
    """Rebuild `punches` with only the columns something reads (or may soon search by).

    Kept: pk (insertion order, drain cursor), id (dedupe, unique index), device (per-device
    counts, batches, replay filter; indexed), user_id and utc_time (nothing reads them yet,
    but they are what a search for a person's punches in a time range needs, and a dropped
    column cannot come back for rows already stored; an index can be added later), source
    (live punches are sent without waiting to fill a batch), payload (the contract record,
    sent verbatim), stored_at (oldest pending age), delivered_at (pending/delivered, replay
    since a time, purge; indexed).

    Dropped, each written at insert and read by nothing (not the store, gateway/, bench/ or
    any test); each is carried in `payload`, which is what the broker receives:

    * device_serial: in the payload as `serial`; the worker keeps a terminal's serial in
      device_meta.
    * local_time: in the payload as `local_time`.
    * utc_offset_seconds: in the payload as `utc_offset` (+HH:MM).
    * state, state_name: in the payload as `state.code` / `state.name`.
    * verify, verify_name: in the payload as `verify.code` / `verify.name`.
    * work_code: in the payload as `work_code`.
    * historical: in the payload as `historical`.
    * flags: in the payload as `flags`.

    Kept although nothing reads it yet: `raw`, the terminal's own record bytes. It is the only
    evidence of what the terminal said (what the driver did not decode, e.g. the Anviz
    door-opened bit, lives nowhere else once a terminal's log is cleared), and the audit work
    needs it; a dropped column cannot come back for rows already stored.

    A rebuild (the "generalized ALTER TABLE" procedure of the SQLite docs) rather than ALTER
    TABLE DROP COLUMN: it works on any SQLite (DROP COLUMN needs 3.35, newer than some
    supported systems ship) and leaves a clean CREATE TABLE in sqlite_schema. Every row is
    copied with its pk, so the drain order, delivery state and replay window are unchanged;
    the copy is counted before the old table is dropped. No foreign keys, triggers or views
    refer to `punches`. Cost: the whole table is rewritten once in this transaction (the WAL
    and the file grow by about the new table's size until the next checkpoint; freed pages
    are reused by later inserts).
    """
    conn.exec_driver_sql(
        """
        CREATE TABLE punches_v2 (
            pk INTEGER PRIMARY KEY,           -- insertion order: 'oldest first' means lowest pk
            id TEXT NOT NULL,                 -- stable record id (docs/mqtt-contract.md)
            device TEXT NOT NULL,             -- configured terminal name
            user_id TEXT NOT NULL,
            utc_time TEXT NOT NULL,           -- ISO 8601 UTC instant
            source TEXT NOT NULL,             -- poll, live or manual
            payload TEXT NOT NULL,            -- the contract record as JSON, rendered once at insert
            raw BLOB NOT NULL,                -- the terminal's own record bytes, kept as evidence
            stored_at REAL NOT NULL,          -- unix time of the durable commit
            delivered_at REAL                 -- unix time of the PUBACK; NULL while pending
        )
        """
    )
    conn.exec_driver_sql(
        """
        INSERT INTO punches_v2 (pk, id, device, user_id, utc_time, source, payload, raw, stored_at, delivered_at)
        SELECT pk, id, device, user_id, utc_time, source, payload, raw, stored_at, delivered_at
        FROM punches ORDER BY pk
        """
    )
    before = int(conn.exec_driver_sql("SELECT count(*) FROM punches").scalar_one())
    copied = int(conn.exec_driver_sql("SELECT count(*) FROM punches_v2").scalar_one())
    if copied != before:
        raise MigrationError(f"punches rebuild copied {copied} of {before} rows; nothing changed")
    conn.exec_driver_sql("DROP TABLE punches")  # its indexes go with it
    conn.exec_driver_sql("ALTER TABLE punches_v2 RENAME TO punches")
    conn.exec_driver_sql("CREATE UNIQUE INDEX ux_punches_id ON punches (id)")
    conn.exec_driver_sql("CREATE INDEX ix_punches_pending ON punches (pk) WHERE delivered_at IS NULL")
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_pending_device ON punches (device) WHERE delivered_at IS NULL"
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_delivered ON punches (delivered_at) WHERE delivered_at IS NOT NULL"
    )


def _v3_identity(conn: Connection) -> None:
    """Give the file an identity: which gateway it belongs to, when it got its identity, and
    how many punches were ever stored in it (see `punchgate.sync.buffer_identity`).

    One row, always (the CHECK keeps it one). `gateway_id` stays NULL until a gateway opens
    the file with its configured id (the migration cannot know it). `stored` counts up with
    every punch inserted, in the insert's transaction, and never down (a purge leaves it), so
    a copy of this file from earlier holds a smaller number than the companion file that was
    written since; an upgraded file starts from the punches it holds. `created` is when the
    row was made (for an upgraded file, the upgrade), UTC with milliseconds.
    """
    conn.exec_driver_sql(
        """
        CREATE TABLE identity (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            gateway_id TEXT,                  -- the gateway that owns the file; NULL until claimed
            created TEXT NOT NULL,            -- UTC, ISO 8601 with milliseconds
            stored INTEGER NOT NULL           -- punches ever inserted (purges do not lower it)
        )
        """
    )
    conn.exec_driver_sql(
        """
        INSERT INTO identity (singleton, gateway_id, created, stored)
        VALUES (1, NULL, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), (SELECT count(*) FROM punches))
        """
    )


def _v4_manual_and_audit(conn: Connection) -> None:
    """Make-up punches and the audit chain (docs/manual-punches.md, docs/audit.md).

    * `manual_punches`: one row per make-up punch entered, with who entered it and why, and,
      once decided, who approved or rejected it. An approved entry also becomes an ordinary
      row of `punches` (source `manual`, `punch_id` names it); a pending or rejected one never
      does. `utc_time` is kept so the conflict and monthly-limit checks need no time zone.
    * `audit`: the hash chain. `seq` numbers the entries 1, 2, 3, ...; `entry` is the entry's
      canonical JSON (it repeats seq and kind), `hash` is SHA-256 (hex) over the previous
      entry's hash and `entry`. Nothing in this step fills it: the store starts the chain at
      its first open, covering the punches the file already holds (`punchgate.sync.audit`).
    * `audit_anchor`: where a pruned chain starts (the last pruned entry's seq and hash); no
      row while nothing was pruned.
    """
    conn.exec_driver_sql(
        """
        CREATE TABLE manual_punches (
            entry_id TEXT PRIMARY KEY,        -- a UUID, part of the approved punch's record id
            device TEXT NOT NULL,             -- configured terminal (or the site's virtual one)
            serial TEXT NOT NULL,             -- that terminal's serial number when entered
            user_id TEXT NOT NULL,
            local_time TEXT NOT NULL,         -- terminal-local ISO 8601, no offset
            utc_time TEXT NOT NULL,           -- the instant, as punches.utc_time writes it
            state INTEGER NOT NULL,           -- raw state code of the terminal's family
            reason_code TEXT NOT NULL,
            reason TEXT NOT NULL,
            entered_by TEXT NOT NULL,
            entered_at TEXT NOT NULL,         -- UTC, ISO 8601 with Z
            status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
            decided_by TEXT,                  -- NULL while pending (and when no approval is required)
            decided_at TEXT,
            note TEXT,                        -- the approver's or rejecter's remark
            punch_id TEXT                     -- the record id once approved
        )
        """
    )
    conn.exec_driver_sql("CREATE INDEX ix_manual_user_time ON manual_punches (user_id, utc_time)")
    conn.exec_driver_sql(
        """
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,          -- 1, 2, 3, ... in append order
            kind TEXT NOT NULL,               -- punches, manual_entered, replay, purge, ...
            entry TEXT NOT NULL,              -- canonical JSON of the entry
            hash TEXT NOT NULL                -- sha256(previous hash + entry), hex
        )
        """
    )
    conn.exec_driver_sql(
        """
        CREATE TABLE audit_anchor (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            seq INTEGER NOT NULL,             -- the last entry pruned
            hash TEXT NOT NULL                -- its hash: the next entry chains from it
        )
        """
    )


def _v5_central_delivery(conn: Connection) -> None:
    """Central delivery (docs/mqtt-contract.md, "Confirmations") and reconciliation digests.

    * `punches.sent_at`: in `central` delivery mode a punch is delivered only when a central
      consumer confirms it stored it. Until then `delivered_at` stays NULL (so the punch counts
      against `max_pending`, is never purged, and `requeue` works as before) and `sent_at` holds
      the unix time of its last PUBACK: NULL means not sent yet, a value means "sent,
      unconfirmed", and a value older than `mqtt.resend_after` means "send it again". In
      `broker` mode nothing writes it. Existing rows start NULL: nothing was sent unconfirmed.
    * Two partial indexes split the pending rows the same way, so the drain (unsent rows by
      pk), the re-send scan, and the unconfirmed count and oldest age stay proportional to what
      they read, not to history.
    * `ix_punches_device_time`: the digests (punchgate.sync.digests) read one terminal's ids of
      a few days at a time by `utc_time`.

    ADD COLUMN with no default and CREATE INDEX: no table rebuild, no row touched.
    """
    conn.exec_driver_sql("ALTER TABLE punches ADD COLUMN sent_at REAL")
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_unsent ON punches (pk) WHERE delivered_at IS NULL AND sent_at IS NULL"
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_punches_unconfirmed ON punches (pk)"
        " WHERE delivered_at IS NULL AND sent_at IS NOT NULL"
    )
    conn.exec_driver_sql("CREATE INDEX ix_punches_device_time ON punches (device, utc_time)")


def _v6_remote_commands(conn: Connection) -> None:
    """Remote commands over MQTT (docs/mqtt-contract.md, "Remote commands"; gateway/commands).

    * `command_requests`: one row per request the gateway accepted, by the requester's id (the
      primary key is what makes a repeated id an answer from here, never a second run).
      `request` is the request as accepted (JSON; once the request is done its secrets are
      replaced by a mask), `reply_topic` and `correlation` where and how to answer (MQTT 5),
      `received_at` / `expires_at` unix times, `done_at` set when every target has its final
      answer (NULL while open: such requests are resumed at start-up).
    * `command_targets`: one row per request and terminal (`target` '' for a gateway-wide
      command): `status` waiting, running, or final (ok, error, expired) with its `response`
      (the JSON answered), and `published` once the broker acknowledged that final answer, so
      an answer lost to a crash is sent after the restart.

    New tables only: no existing row is touched.
    """
    conn.exec_driver_sql(
        """
        CREATE TABLE command_requests (
            id TEXT PRIMARY KEY,              -- the requester's id for the request
            command TEXT NOT NULL,
            requester TEXT NOT NULL,
            request TEXT NOT NULL,            -- the accepted request, JSON
            reply_topic TEXT NOT NULL,
            correlation BLOB,                 -- MQTT 5 correlation data, echoed; NULL if none
            received_at REAL NOT NULL,        -- unix time
            expires_at REAL NOT NULL,         -- unix time: targets not started by then expire
            done_at REAL                      -- every target answered finally; NULL while open
        )
        """
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_command_requests_open ON command_requests (id) WHERE done_at IS NULL"
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_command_requests_done ON command_requests (done_at) WHERE done_at IS NOT NULL"
    )
    conn.exec_driver_sql(
        """
        CREATE TABLE command_targets (
            id TEXT NOT NULL,                 -- command_requests.id
            target TEXT NOT NULL,             -- terminal name; '' for a gateway-wide command
            status TEXT NOT NULL CHECK (status IN ('waiting', 'running', 'ok', 'error', 'expired')),
            response TEXT,                    -- the final answer (JSON); NULL until final
            published INTEGER NOT NULL DEFAULT 0,  -- 1 once the broker acknowledged the final answer
            updated_at REAL NOT NULL,
            PRIMARY KEY (id, target)
        )
        """
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_command_targets_unpublished ON command_targets (id)"
        " WHERE published = 0 AND response IS NOT NULL"
    )


def _v7_audit_checkpoints(conn: Connection) -> None:
    """The audit chain is pruned only through a signed-off checkpoint (docs/audit.md, "Pruning").

    A retention purge first appends a `checkpoint` entry naming the last entry it prunes (seq
    and hash), then moves `audit_anchor` there, then deletes the entries up to it. These
    triggers make any other order, and so a gap nobody signed off, fail in the same statement:

    * `audit_delete_needs_anchor`: an entry after the anchor (or any entry, with no anchor) is
      never deleted;
    * `audit_anchor_needs_checkpoint_{insert,update}`: the anchor moves only forward, and only to
      the seq and hash a later `checkpoint` entry of the chain names;
    * `audit_anchor_kept`: the anchor row is never deleted;
    * `audit_append_only`: an entry is never changed.

    Someone with sqlite3 can drop them, as they can edit anything: `punchgate audit verify` is
    what finds that; these keep the gateway's own code (and honest mistakes) from leaving a gap.
    New triggers only: no row is touched.
    """
    conn.exec_driver_sql(
        """
        CREATE TRIGGER audit_delete_needs_anchor BEFORE DELETE ON audit
        WHEN OLD.seq > coalesce((SELECT seq FROM audit_anchor), 0)
        BEGIN
            SELECT RAISE(ABORT, 'audit entries are pruned only through a checkpoint (anchor first)');
        END
        """
    )
    check = """
        WHEN NOT EXISTS (
            SELECT 1 FROM audit WHERE kind = 'checkpoint' AND seq > NEW.seq
              AND json_extract(entry, '$.pruned_through') = NEW.seq
              AND json_extract(entry, '$.pruned_hash') = NEW.hash
        ){extra}
        BEGIN
            SELECT RAISE(ABORT, 'the audit anchor moves only to what a checkpoint entry names');
        END
        """
    conn.exec_driver_sql(
        "CREATE TRIGGER audit_anchor_needs_checkpoint_insert BEFORE INSERT ON audit_anchor"
        + check.format(extra="")
    )
    conn.exec_driver_sql(
        "CREATE TRIGGER audit_anchor_needs_checkpoint_update BEFORE UPDATE ON audit_anchor"
        + check.format(extra=" OR NEW.seq <= OLD.seq")
    )
    conn.exec_driver_sql(
        """
        CREATE TRIGGER audit_anchor_kept BEFORE DELETE ON audit_anchor
        BEGIN
            SELECT RAISE(ABORT, 'the audit anchor is never deleted');
        END
        """
    )
    conn.exec_driver_sql(
        """
        CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
        BEGIN
            SELECT RAISE(ABORT, 'audit entries are never changed');
        END
        """
    )


def _v8_staged_punches(conn: Connection) -> None:
    """Punches committed before their dedupe (`punchgate.sync.buffer_staging`).

    A push terminal's backlog part is committed here, answered, and moved into `punches`
    later, many parts in one transaction. The rows are exactly the ones an insert into
    `punches` writes (`punch_row`: the same columns, types and meaning); the table has no
    index but its rowid, so a part's commit appends pages instead of rewriting the scattered
    leaves of the `id` index that a hash-keyed insert touches (bench/notes.md). `pk` is the
    staging order, which the move keeps: a terminal's punches reach `punches` in the order it
    uploaded them.
    """
    conn.exec_driver_sql(
        """
        CREATE TABLE staged_punches (
            pk INTEGER PRIMARY KEY,           -- staging order: moved lowest first
            id TEXT NOT NULL,                 -- as in punches: the stable record id
            device TEXT NOT NULL,
            user_id TEXT NOT NULL,
            utc_time TEXT NOT NULL,
            source TEXT NOT NULL,
            payload TEXT NOT NULL,
            raw BLOB NOT NULL,
            stored_at REAL NOT NULL           -- unix time of the staging commit
        )
        """
    )


# Index i holds the step that takes the schema from version i to i + 1. Append only.
STEPS: list[Step] = [
    _v1_initial,
    _v2_keep_only_what_is_read,
    _v3_identity,
    _v4_manual_and_audit,
    _v5_central_delivery,
    _v6_remote_commands,
    _v7_audit_checkpoints,
    _v8_staged_punches,
]
LATEST_VERSION = len(STEPS)


class SchemaTooNewError(Exception):
    """The buffer file was written by a newer punchgate; refusing to touch it."""


def current_version(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def migrate(conn: Connection, steps: list[Step] | None = None) -> tuple[int, int]:
    """Bring the schema up to date inside the caller's transaction; returns (from, to)."""
    steps = STEPS if steps is None else steps
    start = current_version(conn)
    if start > len(steps):
        raise SchemaTooNewError(
            f"buffer schema is version {start}, this punchgate knows up to {len(steps)}; upgrade punchgate"
        )
    for version in range(start, len(steps)):
        steps[version](conn)
        # PRAGMA takes no bound parameters; the value is our own integer.
        conn.exec_driver_sql(f"PRAGMA user_version = {version + 1}")
    return start, len(steps)
