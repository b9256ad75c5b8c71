"""The sink's first schema: punches, latest states, events, digests and dead letters.

Frozen: written out here, never derived from `punchgate.sync.sink.tables` (which names what
the code uses and is checked against the migrated database by the tests).

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "punches",
        sa.Column("id", sa.Text, primary_key=True),  # the record id: one row per punch, ever
        sa.Column("gateway", sa.Text, nullable=False),  # the gateway whose batch stored it first
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("serial", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("local_time", sa.Text, nullable=False),  # terminal-local, no offset
        sa.Column("local_day", sa.String(10), nullable=False),  # its date: the digests' day
        sa.Column("utc_time", _TIME, nullable=False),
        sa.Column("state_code", sa.BigInteger, nullable=False),
        sa.Column("state_name", sa.Text),
        sa.Column("verify_code", sa.BigInteger, nullable=False),
        sa.Column("verify_name", sa.Text),
        sa.Column("work_code", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("historical", sa.Boolean, nullable=False),
        sa.Column("flags", sa.Text, nullable=False),  # comma-separated time flags
        sa.Column("record", _JSON, nullable=False),  # the record as received (later fields too)
        sa.Column("batch_seq", sa.BigInteger, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
    )
    op.create_index("ix_punches_gateway_device_day", "punches", ["gateway", "device", "local_day"])
    op.create_index("ix_punches_user_time", "punches", ["user_id", "utc_time"])
    op.create_table(
        "device_states",
        sa.Column("gateway", sa.Text, primary_key=True),
        sa.Column("device", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("as_of", _TIME),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
    )
    op.create_table(
        "gateway_states",
        sa.Column("gateway", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("gateway", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),  # "" for the gateway itself
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
        sa.UniqueConstraint("gateway", "device", "event", "code", "time", name="ux_events_once"),
    )
    op.create_table(
        "digest_windows",
        sa.Column("gateway", sa.Text, primary_key=True),
        sa.Column("device", sa.Text, primary_key=True),
        sa.Column("first_day", sa.String(10), nullable=False),
        sa.Column("last_day", sa.String(10), nullable=False),
        sa.Column("as_of", _TIME, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
    )
    op.create_table(
        "digests",
        sa.Column("gateway", sa.Text, primary_key=True),
        sa.Column("device", sa.Text, primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        # The last comparison with the punches table: match, missing, extra, differs, unchecked.
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("central_count", sa.Integer),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("checked_at", _TIME),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
    )


def downgrade() -> None:
    for table in ("dead_letters", "digests", "digest_windows", "events", "gateway_states", "device_states"):
        op.drop_table(table)
    op.drop_index("ix_punches_user_time", "punches")
    op.drop_index("ix_punches_gateway_device_day", "punches")
    op.drop_table("punches")
