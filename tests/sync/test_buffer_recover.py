"""`buffer recover` salvages what a damaged file still holds into a new one, keeps the damaged
files aside, and refuses while anyone holds the buffer. `buffer check` says what is wrong."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from punchgate.sync.buffer_check import check_buffer
from punchgate.sync.buffer_errors import BufferLockedError
from punchgate.sync.buffer_paths import BufferPaths
from punchgate.sync.buffer_recover import RecoverError, RecoverReport, recover
from tests.support.factories import make_punches
from tests.sync.test_buffer_damage import (
    DAMAGE,
    GATEWAY,
    PAGE,
    flip_page_header,
    make_buffer,
    open_buffer,
    overwrite_header,
    snapshot,
    truncate_to_half,
)

PUNCHES, DELIVERED = 2000, 500


@pytest.fixture
def buffer(tmp_path: Path) -> tuple[Path, set[str]]:
    path = tmp_path / "state" / "buffer.db"
    return path, make_buffer(path, PUNCHES, DELIVERED)


def stored_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM punches")}


def assert_recovered_file_is_sound(path: Path, report: RecoverReport) -> None:
    """The new file opens (quick_check, identity, companion all agree) and holds what the
    report says; the damaged one is kept aside."""
    assert check_buffer(path, gateway_id=GATEWAY).ok
    store = open_buffer(path)
    try:
        assert store.pending_count() == report.pending
        assert store.punch_count() == report.pending + report.delivered
        assert store.identity == report.new_identity
    finally:
        store.close()
    assert report.kept and report.kept[0].name.startswith("buffer.db.damaged-")
    assert all(p.exists() for p in report.kept)
    assert json.loads(BufferPaths(path).companion.read_text())["created"] == report.new_identity.created


def test_a_flipped_page_byte_loses_one_page_of_punches_and_the_report_says_so(
    buffer: tuple[Path, set[str]],
) -> None:
    path, ids = buffer
    flip_page_header(path)
    damaged = path.read_bytes()
    report = recover(path, gateway_id=GATEWAY)
    punches = report.table("punches")
    assert punches is not None and punches.gaps
    recovered = stored_ids(path)
    assert recovered < ids
    lost = len(ids) - len(recovered)
    assert 0 < lost <= PAGE // 300  # one leaf page's worth (a punch row is a few hundred bytes)
    assert punches.lost_estimate == lost  # counted by the table's intact unique index
    assert report.pending + report.delivered == len(recovered)
    assert report.old_identity is not None and report.old_identity.stored == PUNCHES
    assert any(f"rows lost: {lost}" in line for line in report.lines())
    assert_recovered_file_is_sound(path, report)
    assert report.kept[0].read_bytes() == damaged  # kept aside exactly as it was


def test_a_damaged_interior_page_is_read_around_by_scanning_the_leaf_pages(
    buffer: tuple[Path, set[str]],
) -> None:
    path, ids = buffer
    data = path.read_bytes()
    interior = next(n for n in range(1, len(data) // PAGE) if data[n * PAGE] == 0x05)  # table interior
    with path.open("r+b") as f:
        f.seek(interior * PAGE)
        f.write(b"\xff" * 12)
    report = recover(path, gateway_id=GATEWAY)
    punches = report.table("punches")
    assert punches is not None and punches.scanned > 0
    assert stored_ids(path) == ids
    assert (report.pending, report.delivered) == (PUNCHES - DELIVERED, DELIVERED)
    assert_recovered_file_is_sound(path, report)


def test_a_corrupt_header_is_rebuilt_and_everything_is_recovered(buffer: tuple[Path, set[str]]) -> None:
    path, ids = buffer
    overwrite_header(path)
    report = recover(path, gateway_id=GATEWAY)
    assert report.header_rebuilt == PAGE
    assert stored_ids(path) == ids
    assert (report.pending, report.delivered) == (PUNCHES - DELIVERED, DELIVERED)
    assert_recovered_file_is_sound(path, report)


def test_staged_punches_are_recovered_with_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "state" / "buffer.db"
    ids = make_buffer(path, 200, 50)
    store = open_buffer(path)
    staged = make_punches("door-9", 120)
    try:
        assert store.add_or_stage(staged, stage=True) is None
    finally:
        store.close()
    overwrite_header(path)

    report = recover(path, gateway_id=GATEWAY)

    assert stored_ids(path) == ids
    store = open_buffer(path)
    try:
        assert store.staged_count("door-9") == 120
        assert store.move_staged(1_000).inserted == {"door-9": [p.id for p in staged]}
    finally:
        store.close()
    assert report.table("staged_punches") is not None


def test_a_half_truncated_file_gives_back_its_first_half(buffer: tuple[Path, set[str]]) -> None:
    path, ids = buffer
    truncate_to_half(path)
    report = recover(path, gateway_id=GATEWAY)
    recovered = stored_ids(path)
    assert recovered < ids and len(recovered) > PUNCHES // 3
    assert_recovered_file_is_sound(path, report)


@pytest.mark.parametrize("kind", ["truncated to 0 bytes", "random bytes"])
def test_nothing_readable_still_gives_a_fresh_file_and_keeps_the_old_one(
    buffer: tuple[Path, set[str]], kind: str
) -> None:
    path, _ids = buffer
    DAMAGE[kind][0](path)
    report = recover(path, gateway_id=GATEWAY)
    assert report.source_error is not None
    assert report.pending == report.delivered == 0
    assert report.new_identity is not None and report.new_identity.stored == 0
    assert_recovered_file_is_sound(path, report)


def test_a_file_emptied_after_a_crash_gives_back_what_its_wal_holds(tmp_path: Path) -> None:
    # A daemon killed before it could checkpoint: the newest punches live only in the WAL.
    path = tmp_path / "buffer.db"
    script = f"""
        import os
        from punchgate.sync.settings import BufferSettings
        from punchgate.sync.store import Store
        from tests.support.factories import make_punches
        store = Store.open(BufferSettings(path={str(path)!r}, min_free_disk_mb=0), gateway_id={GATEWAY!r})
        for start in range(0, 600, 100):
            store.add_punches(make_punches("door-1", 100, start=start))
        os._exit(0)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, cwd=Path(__file__).parents[2])
    assert BufferPaths(path).wal.stat().st_size > 0
    os.truncate(path, 0)
    report = recover(path, gateway_id=GATEWAY)
    assert any("buffer.db-wal alone" in note for note in report.notes)
    assert report.pending == 600
    assert_recovered_file_is_sound(path, report)


def test_a_deleted_file_with_its_companion_gives_a_fresh_file(buffer: tuple[Path, set[str]]) -> None:
    path, _ids = buffer
    path.unlink()
    report = recover(path, gateway_id=GATEWAY)
    assert [p.name.rsplit("-", 1)[0] for p in report.kept] == ["buffer.db.damaged"]  # the companion
    assert report.kept[0].name.endswith(".id")
    open_buffer(path).close()


def test_an_older_schema_file_goes_through_the_migrations(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, event

    from punchgate.sync import buffer_file, migrations

    path = tmp_path / "buffer.db"
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", buffer_file.configure_connection)
    with engine.begin() as conn:
        migrations.migrate(conn, migrations.STEPS[:2])
        conn.exec_driver_sql(
            "INSERT INTO punches (id, device, user_id, utc_time, source, payload, raw, stored_at)"
            """ VALUES ('p1', 'd', 'u', 't', 'poll', '{"id": "p1"}', x'00', 0)"""
        )
    engine.dispose()
    report = recover(path, gateway_id=GATEWAY)
    assert report.source_version == 2 and report.pending == 1
    assert_recovered_file_is_sound(path, report)


def test_recovery_refuses_while_a_store_holds_the_buffer(buffer: tuple[Path, set[str]]) -> None:
    path, _ids = buffer
    store = open_buffer(path)  # what the daemon does for its whole life
    try:
        before = snapshot(path.parent)
        with pytest.raises(BufferLockedError, match="stop the daemon first"):
            recover(path, gateway_id=GATEWAY)
        assert snapshot(path.parent) == before
    finally:
        store.close()


def test_nothing_to_recover_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(RecoverError, match="nothing to recover"):
        recover(tmp_path / "buffer.db", gateway_id=GATEWAY)
    assert [p.name for p in tmp_path.iterdir()] == ["buffer.db.lock"]


def test_two_recoveries_in_one_second_keep_both_damaged_files(buffer: tuple[Path, set[str]]) -> None:
    path, _ids = buffer
    first = recover(path, gateway_id=GATEWAY)
    second = recover(path, gateway_id=GATEWAY)
    assert first.kept[0] != second.kept[0]
    assert all(p.exists() for p in first.kept + second.kept)


def test_recovered_files_are_private(buffer: tuple[Path, set[str]]) -> None:
    path, _ids = buffer
    previous = os.umask(0o022)
    try:
        recover(path, gateway_id=GATEWAY)
    finally:
        os.umask(previous)
    paths = BufferPaths(path)
    assert paths.db.stat().st_mode & 0o777 == 0o600
    assert paths.companion.stat().st_mode & 0o777 == 0o600


# --- check --------------------------------------------------------------------------------------
def test_check_reports_counts_identity_and_companion_without_changing_anything(
    buffer: tuple[Path, set[str]],
) -> None:
    path, _ids = buffer
    before = snapshot(path.parent)
    report = check_buffer(path, gateway_id=GATEWAY)
    assert report.ok and report.integrity == ["ok"]
    assert (report.pending, report.delivered) == (PUNCHES - DELIVERED, DELIVERED)
    assert report.identity == report.companion
    assert report.holder is None
    text = "\n".join(report.lines())
    assert f"{PUNCHES - DELIVERED} pending, {DELIVERED} delivered" in text and "OK" in text
    after = snapshot(path.parent)
    assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == before


def test_check_names_the_process_holding_the_buffer(buffer: tuple[Path, set[str]]) -> None:
    path, _ids = buffer
    store = open_buffer(path)
    try:
        report = check_buffer(path, gateway_id=GATEWAY)
    finally:
        store.close()
    assert report.ok and report.holder == os.getpid()
