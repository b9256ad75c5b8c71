"""Alembic's environment for the sink database, used only programmatically.

`punchgate.sync.sink.db.upgrade` passes the open connection in `config.attributes["connection"]`
and runs `alembic upgrade head` on it; there is no alembic.ini and no offline (SQL script)
mode. Each revision runs in its own transaction (`transaction_per_migration`), so a failed
one leaves the database at the previous revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

config = context.config
connection = config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the sink's migrations run from punchgate.sync.sink.db.upgrade, with a connection")
context.configure(connection=connection, transaction_per_migration=True, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
