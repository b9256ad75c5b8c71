"""The sink database's tables as the code uses them (SQLAlchemy Core).

The schema itself is written by the Alembic revisions in `migrations/versions/` (frozen, append
only); this module names the same tables and columns with the types the code binds, for the
queries. tests/sink/test_db.py checks that a migrated database has exactly these columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)

punches = sa.Table(
    "punches",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("gateway", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("serial", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("local_time", sa.Text, nullable=False),
    sa.Column("local_day", sa.String(10), nullable=False),
    sa.Column("utc_time", TIME, nullable=False),
    sa.Column("state_code", sa.BigInteger, nullable=False),
    sa.Column("state_name", sa.Text),
    sa.Column("verify_code", sa.BigInteger, nullable=False),
    sa.Column("verify_name", sa.Text),
    sa.Column("work_code", sa.BigInteger, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("historical", sa.Boolean, nullable=False),
    sa.Column("flags", sa.Text, nullable=False),
    sa.Column("record", JSON, nullable=False),
    sa.Column("batch_seq", sa.BigInteger, nullable=False),
    sa.Column("received_at", TIME, nullable=False),
)

device_states = sa.Table(
    "device_states",
    metadata,
    sa.Column("gateway", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("as_of", TIME),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("received_at", TIME, nullable=False),
)

gateway_states = sa.Table(
    "gateway_states",
    metadata,
    sa.Column("gateway", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("received_at", TIME, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("gateway", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("time", TIME, nullable=False),
    sa.Column("received_at", TIME, nullable=False),
    sa.UniqueConstraint("gateway", "device", "event", "code", "time", name="ux_events_once"),
)

digest_windows = sa.Table(
    "digest_windows",
    metadata,
    sa.Column("gateway", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("first_day", sa.String(10), nullable=False),
    sa.Column("last_day", sa.String(10), nullable=False),
    sa.Column("as_of", TIME, nullable=False),
    sa.Column("received_at", TIME, nullable=False),
)

digests = sa.Table(
    "digests",
    metadata,
    sa.Column("gateway", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("central_count", sa.Integer),
    sa.Column("received_at", TIME, nullable=False),
    sa.Column("checked_at", TIME),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("received_at", TIME, nullable=False),
)
