"""Changing a buffer file behind the gateway's back, the way someone with sqlite3 would: the
v7 triggers that keep the gateway's own code from changing or cutting the chain are dropped
first (anyone with write access to the file can), so the tests show what `verify` finds."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tampered(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to `path` with the audit triggers gone; commits on leaving."""
    db = sqlite3.connect(path)
    try:
        triggers = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        for name in triggers:
            if name.startswith("audit"):
                db.execute(f'DROP TRIGGER "{name}"')
        yield db
        db.commit()
    finally:
        db.close()
