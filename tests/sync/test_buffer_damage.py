"""A damaged, missing or foreign buffer file is refused at open, and left exactly as found.

Real files throughout: a buffer is built by the store, closed, then damaged the way disks and
people damage files (truncated to nothing or to half, overwritten, a header or a b-tree page
byte flipped, deleted). Also here: the files' permissions, and the lock the store holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from punchgate.sync import buffer_file, migrations
from punchgate.sync.buffer_check import check_buffer
from punchgate.sync.buffer_errors import BufferLockedError, BufferRefusedError, StoreError
from punchgate.sync.buffer_paths import BufferPaths
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches

GATEWAY = "gw-damage"
PAGE = 4096


# --- helpers shared with the other buffer tests ---------------------------------------------------
def settings_for(path: Path) -> BufferSettings:
    return BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0})


def open_buffer(path: Path, gateway_id: str | None = GATEWAY) -> Store:
    return Store.open(settings_for(path), gateway_id=gateway_id)


def make_buffer(path: Path, punches: int = 2000, delivered: int = 500, gateway_id: str = GATEWAY) -> set[str]:
    """A closed buffer holding `punches` punches of which the oldest `delivered` are delivered;
    their ids. Closing checkpoints the WAL, so everything is in the database file itself."""
    store = open_buffer(path, gateway_id)
    batch = make_punches("door-1", punches)
    store.add_punches(batch)
    store.mark_delivered([row.pk for row in store.pending_batch(delivered)])
    store.close()
    assert not BufferPaths(path).wal.exists()
    return {p.id for p in batch}


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file in `folder`: size and content hash (to prove a refusal changed nothing)."""
    return {
        f.name: (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted(folder.iterdir())
        if f.is_file() and not f.name.endswith(".lock")  # the lock file holds the last opener's pid
    }


def table_leaf_pages(path: Path) -> list[int]:
    """Page numbers (1-based) of the file's table b-tree leaf pages (type byte 0x0D)."""
    data = path.read_bytes()
    return [n + 1 for n in range(1, len(data) // PAGE) if data[n * PAGE] == 0x0D]


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


def flip_page_header(path: Path) -> None:
    """Flip the type byte of the table-leaf page nearest the middle of the file; its number.

    A flipped byte inside a row's text is invisible to SQLite (pages carry no checksum), so
    the damage goes where quick_check looks: the b-tree page header."""
    leaves = table_leaf_pages(path)
    middle = len(path.read_bytes()) // PAGE // 2
    page = min(leaves, key=lambda n: abs(n - middle))
    flip_byte(path, (page - 1) * PAGE)


def truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2 // PAGE * PAGE)  # whole pages: SQLite's own unit


def overwrite_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(b"\x5a" * 100)


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated to 0 bytes": (lambda p: os.truncate(p, 0), "empty"),
    "half truncated": (truncate_to_half, "truncated"),
    "cut mid-page": (lambda p: os.truncate(p, p.stat().st_size // 2 + 100), "truncated"),
    "corrupt header": (overwrite_header, "not_sqlite"),
    "random bytes": (random_bytes, "not_sqlite"),
    "flipped b-tree page byte": (flip_page_header, "corrupt"),
}


@pytest.fixture
def buffer(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "buffer.db"
    make_buffer(path)
    return path


# --- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_file_is_refused_and_left_untouched(buffer: Path, kind: str) -> None:
    damage, problem = DAMAGE[kind]
    damage(buffer)
    before = snapshot(buffer.parent)
    with pytest.raises(BufferRefusedError) as refused:
        open_buffer(buffer)
    assert refused.value.problem == problem
    message = str(refused.value)
    assert (
        str(buffer) in message
        and "punchgate buffer check" in message
        and "punchgate buffer recover" in message
    )
    assert snapshot(buffer.parent) == before  # nothing written, nothing created (no -wal, no -shm)
    # The refusal released the lock: the next try is refused for the same reason, not "locked".
    with pytest.raises(BufferRefusedError) as again:
        open_buffer(buffer)
    assert again.value.problem == problem


def test_the_empty_file_refusal_says_what_the_companion_remembers(buffer: Path) -> None:
    os.truncate(buffer, 0)
    with pytest.raises(BufferRefusedError, match=r"empty \(0 bytes\).*'gw-damage'.*2000 punches stored"):
        open_buffer(buffer)


def test_a_deleted_file_whose_companion_remains_is_refused_and_not_recreated(buffer: Path) -> None:
    buffer.unlink()
    with pytest.raises(BufferRefusedError, match="the file is missing") as refused:
        open_buffer(buffer)
    assert refused.value.problem == "missing"
    assert not buffer.exists()


def test_a_deleted_file_whose_wal_remains_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    BufferPaths(path).wal.write_bytes(b"\0" * 32)
    with pytest.raises(BufferRefusedError, match=r"buffer\.db-wal is there"):
        open_buffer(path)
    assert not path.exists()


def test_an_empty_file_without_companion_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    path.touch()
    with pytest.raises(
        BufferRefusedError, match="if this is a new install and nothing was ever stored, delete"
    ):
        open_buffer(path)
    assert path.stat().st_size == 0


def test_quick_check_catches_a_flipped_page_header_byte(buffer: Path) -> None:
    flip_page_header(buffer)
    with pytest.raises(BufferRefusedError) as refused:
        open_buffer(buffer)
    assert refused.value.problem == "corrupt"
    report = check_buffer(buffer, gateway_id=GATEWAY)  # integrity_check agrees
    assert not report.ok
    assert report.integrity is not None and report.integrity != ["ok"]


def test_a_genuinely_new_install_creates_the_file_and_its_companion(tmp_path: Path) -> None:
    path = tmp_path / "new" / "buffer.db"
    store = open_buffer(path)
    store.add_punches(make_punches("d", 5))
    store.close()
    companion = json.loads(BufferPaths(path).companion.read_text())
    assert companion["gateway_id"] == GATEWAY and companion["stored"] == 5
    reopened = open_buffer(path)
    assert companion["created"] == reopened.identity.created
    reopened.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["buffer.db", "buffer.db.id", "buffer.db.lock"]


def test_a_failed_first_open_leaves_no_empty_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were a half-made file left, the next start would be refused as "empty" forever.
    path = tmp_path / "buffer.db"
    monkeypatch.setattr(migrations, "STEPS", [])
    with pytest.raises(StoreError, match="lacks columns"):
        open_buffer(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer.db.lock"]
    monkeypatch.undo()
    open_buffer(path).close()  # and the next start makes it properly


# --- the lock -----------------------------------------------------------------------------------
def test_a_second_store_on_the_same_buffer_is_refused_naming_the_holder(
    buffer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buffer_file, "LOCK_WAIT", 0.2)
    first = open_buffer(buffer)
    try:
        with pytest.raises(BufferLockedError, match=f"process {os.getpid()} is using it"):
            open_buffer(buffer)
    finally:
        first.close()
    open_buffer(buffer).close()  # released at close


# --- permissions --------------------------------------------------------------------------------
@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_files_are_0600_and_the_folder_0700_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / "buffer.db"
    store = open_buffer(path)
    store.add_punches(make_punches("d", 10))  # the WAL and its index exist while the store is open
    paths = BufferPaths(path)
    try:
        assert _mode(paths.folder) == 0o700
        for file in (paths.db, paths.wal, paths.shm, paths.companion, paths.lock):
            assert _mode(file) == 0o600, file.name
    finally:
        store.close()
    assert _mode(paths.companion) == 0o600  # rewritten at close, still private


@pytest.mark.usefixtures("umask_022")
def test_an_older_install_s_readable_files_are_tightened_at_open(buffer: Path) -> None:
    paths = BufferPaths(buffer)
    for file in (paths.db, paths.companion):
        os.chmod(file, 0o644)
    assert any(f.problem == "permissions" and not f.refuse for f in check_buffer(buffer).findings)
    open_buffer(buffer).close()
    assert _mode(paths.db) == 0o600 and _mode(paths.companion) == 0o600
