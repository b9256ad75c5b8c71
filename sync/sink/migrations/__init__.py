"""The sink database's Alembic environment (env.py) and its migrations (versions/), run
programmatically at every start by `punchgate.sync.sink.db.upgrade`."""
