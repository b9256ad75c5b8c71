"""The buffer's identity record and its companion file: kept in step, compared at every open.

The companion may lag behind the file (it is written at most once a second and at close) but
never runs ahead of it, so a file with fewer punches than its companion went back in time.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event
from structlog.testing import capture_logs

from punchgate.sync import buffer_file, buffer_identity, migrations
from punchgate.sync.buffer_errors import BufferRefusedError
from punchgate.sync.buffer_identity import ROLLBACK_TOLERANCE, CompanionWriter, read_companion
from punchgate.sync.buffer_paths import BufferPaths
from tests.support.factories import make_punches
from tests.sync.test_buffer_damage import GATEWAY, make_buffer, open_buffer


def companion_of(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(BufferPaths(path).companion.read_text())
    return data


def test_stored_counts_every_punch_ever_stored_and_a_purge_does_not_lower_it(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = open_buffer(path)
    store.add_punches(make_punches("a", 120))
    store.add_punches(make_punches("a", 150))  # 120 known: only 30 are new
    store.mark_delivered([r.pk for r in store.pending_batch(100)])
    assert store.purge_delivered(older_than_days=0) == 100
    assert store.identity.stored == 150 and store.punch_count() == 50
    store.close()
    assert companion_of(path)["stored"] == 150
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT gateway_id, stored FROM identity").fetchall() == [(GATEWAY, 150)]


def test_the_companion_is_never_ahead_of_the_file_and_catches_up_at_close(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = open_buffer(path)
    for start in range(0, 500, 25):
        store.add_punches(make_punches("a", 25, start=start))
        on_disk = read_companion(BufferPaths(path).companion)
        assert on_disk is not None and on_disk.stored <= store.identity.stored
    store.close()
    assert companion_of(path)["stored"] == 500


def test_companion_writes_are_rate_limited(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = open_buffer(path)
    started = time.monotonic()
    for start in range(0, 3000, 10):  # 300 commits as fast as they go
        store.add_punches(make_punches("a", 10, start=start))
    elapsed = time.monotonic() - started
    writes = store._companion.writes
    store.close()
    assert writes <= elapsed / buffer_identity.COMPANION_INTERVAL + 1


def test_a_companion_write_is_atomic_and_private(tmp_path: Path) -> None:
    paths = BufferPaths(tmp_path / "buffer.db")
    writer = CompanionWriter(paths, buffer_identity.Identity("gw", "2026-01-01T00:00:00.000Z", 0), interval=0)
    writer.update(7)
    assert read_companion(paths.companion) == buffer_identity.Identity("gw", "2026-01-01T00:00:00.000Z", 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer.db.id"]  # no temp file left
    assert paths.companion.stat().st_mode & 0o777 == 0o600


def test_a_file_replaced_by_an_older_copy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    make_buffer(path, punches=200, delivered=0)
    shutil.copyfile(path, tmp_path / "backup.db")
    store = open_buffer(path)
    store.add_punches(make_punches("b", ROLLBACK_TOLERANCE + 50))
    store.close()
    shutil.copyfile(tmp_path / "backup.db", path)  # the older copy goes back in place
    with pytest.raises(BufferRefusedError, match=r"stored 200 punches, 150 fewer than the 350") as refused:
        open_buffer(path)
    assert refused.value.problem == "older_copy"


def test_a_small_shortfall_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    # What a power cut on a disk that ignores flushes can do: the last commits are gone.
    path = tmp_path / "buffer.db"
    make_buffer(path, punches=200, delivered=0)
    shutil.copyfile(path, tmp_path / "backup.db")
    store = open_buffer(path)
    store.add_punches(make_punches("b", 10))
    store.close()
    shutil.copyfile(tmp_path / "backup.db", path)
    with capture_logs() as logs:
        store = open_buffer(path)
    store.close()
    warnings = [e for e in logs if e["event"] == "buffer_older_copy"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert "10 fewer than the 210" in warnings[0]["detail"]
    assert companion_of(path)["stored"] == 200  # the companion follows the file from now on


def test_a_file_replaced_by_a_different_one_is_refused(tmp_path: Path) -> None:
    make_buffer(tmp_path / "a" / "buffer.db", punches=10)
    make_buffer(tmp_path / "b" / "buffer.db", punches=500)  # same gateway, another file
    shutil.copyfile(tmp_path / "b" / "buffer.db", tmp_path / "a" / "buffer.db")
    with pytest.raises(BufferRefusedError, match="was replaced by another") as refused:
        open_buffer(tmp_path / "a" / "buffer.db")
    assert refused.value.problem == "replaced"


def test_another_gateway_s_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    make_buffer(path, punches=10, gateway_id="gw-elsewhere")
    with pytest.raises(
        BufferRefusedError, match="belongs to gateway 'gw-elsewhere', this gateway is 'gw-damage'"
    ):
        open_buffer(path)
    # Nothing was claimed or migrated by the refused open.
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT gateway_id FROM identity").fetchone() == ("gw-elsewhere",)


def test_a_file_copied_in_beside_another_gateway_s_companion_is_refused(tmp_path: Path) -> None:
    make_buffer(tmp_path / "mine" / "buffer.db", punches=10)
    make_buffer(tmp_path / "theirs" / "buffer.db", punches=10, gateway_id="gw-theirs")
    shutil.copyfile(tmp_path / "theirs" / "buffer.db", tmp_path / "mine" / "buffer.db")
    with pytest.raises(BufferRefusedError, match="copied from another gateway"):
        open_buffer(tmp_path / "mine" / "buffer.db", gateway_id=None)  # a tool that knows no gateway id


def test_an_unclaimed_file_is_claimed_by_the_first_gateway_that_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = open_buffer(path, gateway_id=None)  # e.g. filled by a benchmark or a test
    store.add_punches(make_punches("a", 3))
    store.close()
    assert companion_of(path)["gateway_id"] is None
    open_buffer(path, gateway_id="gw-first").close()
    assert companion_of(path)["gateway_id"] == "gw-first"
    with pytest.raises(BufferRefusedError, match="belongs to gateway 'gw-first'"):
        open_buffer(path, gateway_id="gw-second")


@pytest.mark.parametrize("companion", ["missing", "unreadable"])
def test_a_missing_or_unreadable_companion_is_written_anew_with_a_warning(
    tmp_path: Path, companion: str
) -> None:
    path = tmp_path / "buffer.db"
    make_buffer(path, punches=30, delivered=0)
    if companion == "missing":
        BufferPaths(path).companion.unlink()
    else:
        BufferPaths(path).companion.write_text("{not json")
    with capture_logs() as logs:
        open_buffer(path).close()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [f"buffer_companion_{companion}"]
    assert companion_of(path)["stored"] == 30


def test_a_file_from_before_the_identity_gets_one_at_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", buffer_file.configure_connection)
    with engine.begin() as conn:
        migrations.migrate(conn, migrations.STEPS[:2])  # the schema before the identity
        conn.exec_driver_sql(
            "INSERT INTO punches (id, device, user_id, utc_time, source, payload, raw, stored_at)"
            " VALUES ('p1', 'd', 'u', 't', 'poll', '{}', x'00', 0), ('p2', 'd', 'u', 't', 'poll', '{}', x'00', 0)"
        )
    engine.dispose()
    with capture_logs() as logs:
        store = open_buffer(path)
    assert store.identity.gateway_id == GATEWAY and store.identity.stored == 2
    store.close()
    assert any(
        e["event"] == "buffer_schema_migrated" and e["to_version"] == migrations.LATEST_VERSION for e in logs
    )
    assert companion_of(path)["stored"] == 2
