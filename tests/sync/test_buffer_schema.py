"""One schema definition: the migrations. The store only names columns, and only ones that exist.

What these tests hold the code to (see `punchgate.sync.buffer_schema`):

* every column the store's code names exists in the schema the migrations produce;
* the migrated file has no column the store does not name (nothing is stored unread);
* the store never creates or alters a table: no DDL in its modules, none at run time, and a
  file the migrations did not build is refused rather than patched up.
"""

from __future__ import annotations

import ast
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event

from punchgate.sync import (
    buffer_devices,
    buffer_errors,
    buffer_file,
    buffer_limits,
    buffer_outbox,
    buffer_schema,
    migrations,
    store,
)
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store, StoreError
from tests.support.factories import make_punches

STORE_MODULES = [
    store,
    buffer_schema,
    buffer_file,
    buffer_outbox,
    buffer_devices,
    buffer_limits,
    buffer_errors,
]
_DDL = re.compile(r"\b(CREATE|ALTER|DROP)\s+(TABLE|INDEX|VIEW|TRIGGER|COLUMN)\b", re.IGNORECASE)


def _open(path: Path) -> Store:
    return Store.open(BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}))


@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A file built by the migrations alone (no Store involved)."""
    path = tmp_path / "migrated.db"
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", buffer_file.configure_connection)
    event.listen(engine, "begin", buffer_file.begin)
    with engine.begin() as conn:
        assert migrations.migrate(conn) == (0, migrations.LATEST_VERSION)
    engine.dispose()
    with sqlite3.connect(path) as db:
        yield db


def _columns(db: sqlite3.Connection, name: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({name})")]


def test_every_column_the_store_names_exists_in_the_migrated_schema(migrated: sqlite3.Connection) -> None:
    for handle in buffer_schema.TABLES:
        present = _columns(migrated, handle.name)
        named = [c.name for c in handle.columns]
        assert set(named) <= set(present), f"{handle.name}: store names {named}, file has {present}"
    # The raw-SQL hot paths take their names from the handles, so they are covered too.
    assert {c.name for c in buffer_outbox.INSERT_COLUMNS} <= {c.name for c in buffer_schema.punches.columns}


def test_the_file_holds_only_columns_the_store_names(migrated: sqlite3.Connection) -> None:
    tables = {row[0] for row in migrated.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {handle.name for handle in buffer_schema.TABLES}
    for handle in buffer_schema.TABLES:
        assert sorted(_columns(migrated, handle.name)) == sorted(c.name for c in handle.columns)


def test_an_insert_writes_every_column_but_pk_and_the_delivery_marks(tmp_path: Path) -> None:
    punch = make_punches("a", 1)[0]
    assert len(buffer_outbox.punch_row(punch, 0.0)) == len(buffer_outbox.INSERT_COLUMNS)
    written = {c.name for c in buffer_outbox.INSERT_COLUMNS}
    assert written == {c.name for c in buffer_schema.punches.columns} - {"pk", "delivered_at", "sent_at"}


def _string_constants(tree: ast.AST) -> Iterator[str]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


@pytest.mark.parametrize("module", STORE_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_the_store_modules_hold_no_schema_definition(module: ModuleType) -> None:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    assert [s for s in _string_constants(tree) if _DDL.search(s)] == []
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert names.isdisjoint({"MetaData", "Table", "Column", "create_all", "DDL", "CreateTable"})


def test_the_ddl_is_in_the_migrations() -> None:
    # The detector above finds DDL where it is meant to be.
    assert migrations.__file__ is not None
    tree = ast.parse(Path(migrations.__file__).read_text())
    assert any(_DDL.search(s) for s in _string_constants(tree))


def test_the_store_refuses_a_file_the_migrations_did_not_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no migration steps at all, a store that created tables itself would open fine.
    monkeypatch.setattr(migrations, "STEPS", [])
    path = tmp_path / "buffer.db"
    with pytest.raises(StoreError, match=re.escape("lacks columns the store uses: punches.pk, punches.id")):
        _open(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends while the fixture is active."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def test_at_run_time_the_store_sends_no_ddl_and_every_statement_fits_the_schema(
    tmp_path: Path, statements: list[str]
) -> None:
    path = tmp_path / "buffer.db"
    first = _open(path)  # migrations run here (DDL, recorded but not held against the store)
    first.next_batch_seq("a")
    first.close()
    statements.clear()

    # Every public method, each on the already migrated file: all must succeed (so every
    # column they name exists) and none may send DDL.
    s = _open(path)
    s.add_punches(make_punches("a", 30) + make_punches("b", 10))
    assert s.known_ids(["nope"]) == set()
    assert s.pending_count() == 40 and s.pending_count("a") == 30
    assert s.pending_devices() == {"a": 30, "b": 10}
    assert s.oldest_pending_age() is not None
    rows = s.pending_batch(20, after=0)
    assert s.mark_delivered([r.pk for r in rows]) == 20
    assert s.requeue_delivered(since=0, device="b") == 0
    assert s.requeue_delivered(since=0) == 20
    s.mark_delivered([r.pk for r in s.pending_batch(40)])
    assert s.next_batch_seq("a") > 1  # the update path of the reservation
    assert s.next_batch_seqs(["b", "b"]) == [1, 2]  # the insert path
    s.set_device_meta("a", {"serial_number": "SN-a"})
    s.set_device_meta("a", {"serial_number": "SN-a", "record_count": 1})
    assert s.get_device_meta("a") == {"record_count": 1, "serial_number": "SN-a"}
    assert len(s.delivered_ids()) == 40 and len(s.all_ids()) == 40 and s.punch_count() == 40
    assert s.purge_delivered(older_than_days=0) == 40
    assert s.active_faults() == frozenset()
    s.close()

    assert statements, "the listener saw nothing"
    assert [sql for sql in statements if _DDL.search(sql)] == []
    for table in ("punches", "batch_seq", "device_meta"):
        assert any(table in sql for sql in statements)
