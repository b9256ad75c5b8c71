"""The sink database's migrations: frozen, append only (a change is a new revision)."""
