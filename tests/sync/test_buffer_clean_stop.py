"""quick_check at start: skipped only when the last clean stop left the file exactly as it is.

Real buffer files built by the store. A clean close records how it left the file; the next
open trusts that and skips the check, and any sign of another history (a crash's WAL, a
write, a replaced file, a week-old check, a record that cannot be read) runs the check, which
still refuses a damaged file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from punchgate.sync import buffer_clean_stop
from punchgate.sync.buffer_errors import BufferRefusedError
from punchgate.sync.buffer_paths import BufferPaths
from tests.support.factories import make_punches
from tests.sync.test_buffer_damage import flip_page_header, make_buffer, open_buffer


def opened(path: Path) -> MutableMapping[str, Any]:
    """Open and close the buffer; the buffer_opened event (its quick_check says why it ran)."""
    with capture_logs() as logs:
        store = open_buffer(path)
    store.close()
    (event,) = [e for e in logs if e["event"] == "buffer_opened"]
    return event


def companion(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(BufferPaths(path).companion.read_text())
    return data


@pytest.fixture
def buffer(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "buffer.db"
    make_buffer(path, punches=500, delivered=100)
    return path


def test_a_start_after_a_clean_stop_skips_the_check(buffer: Path) -> None:
    assert "clean_stop" in companion(buffer)
    event = opened(buffer)
    assert event["quick_check"] == "skipped"
    # The skip carries the last check's time on: the stop after it records the same time.
    checked = companion(buffer)["clean_stop"]["checked"]
    assert opened(buffer)["quick_check"] == "skipped"
    assert companion(buffer)["clean_stop"]["checked"] == checked


def test_a_new_file_is_not_checked_and_its_first_stop_vouches_for_it(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    assert opened(path)["quick_check"] == "new_file"
    assert opened(path)["quick_check"] == "skipped"


def test_a_file_damaged_after_a_clean_stop_is_still_refused(buffer: Path) -> None:
    flip_page_header(buffer)  # a write: the file is not as the stop left it
    with pytest.raises(BufferRefusedError) as refused:
        open_buffer(buffer)
    assert refused.value.problem == "corrupt"


def test_a_file_touched_in_the_same_clock_tick_as_the_record_is_checked(buffer: Path) -> None:
    """The record cannot tell a write in the tick it was made: such a file is checked."""
    paths = BufferPaths(buffer)
    stamp = paths.companion.stat().st_mtime_ns
    os.utime(buffer, ns=(stamp, stamp))
    clean = companion(buffer)["clean_stop"]
    clean["mtime_ns"] = stamp
    data = companion(buffer)
    data["clean_stop"] = clean
    paths.companion.write_text(json.dumps(data))
    os.utime(paths.companion, ns=(stamp, stamp))
    assert opened(buffer)["quick_check"] == "file_changed"


def test_a_crash_leaves_its_wal_and_the_next_start_checks(tmp_path: Path) -> None:
    path = tmp_path / "crashed.db"
    make_buffer(path, punches=50, delivered=0)
    script = (
        "import os, signal, sys\n"
        "from tests.sync.test_buffer_damage import open_buffer\n"
        "from tests.support.factories import make_punches\n"
        "from pathlib import Path\n"
        f"store = open_buffer(Path({str(path)!r}))\n"
        "store.add_punches(make_punches('door-2', 20))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    crashed = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert crashed.returncode == -signal.SIGKILL
    assert BufferPaths(path).wal.exists()
    assert "clean_stop" in companion(path)  # the last clean stop's record, from before the crash
    assert opened(path)["quick_check"] == "wal_left"


def test_a_file_replaced_while_stopped_is_checked(buffer: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    copy.write_bytes(buffer.read_bytes())
    stat = buffer.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time, another inode
    copy.replace(buffer)
    assert opened(buffer)["quick_check"] == "file_changed"


def test_a_week_old_check_runs_again(buffer: Path) -> None:
    paths = BufferPaths(buffer)
    data = companion(buffer)
    data["clean_stop"]["checked"] = time.time() - buffer_clean_stop.QUICK_CHECK_EVERY - 60
    stat = paths.companion.stat()
    paths.companion.write_text(json.dumps(data))
    os.utime(paths.companion, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    event = opened(buffer)
    assert event["quick_check"] == "check_due"
    assert time.time() - companion(buffer)["clean_stop"]["checked"] < 60  # checked now


@pytest.mark.parametrize(
    "record",
    [
        None,
        "yes",
        {"size": "1"},
        {"size": 1, "inode": 2, "mtime_ns": 3},
        {"size": True, "inode": 1, "mtime_ns": 1, "checked": 1},
    ],
)
def test_a_record_not_understood_runs_the_check(buffer: Path, record: object) -> None:
    paths = BufferPaths(buffer)
    data = companion(buffer)
    data["clean_stop"] = record
    stat = paths.companion.stat()
    paths.companion.write_text(json.dumps(data))
    os.utime(paths.companion, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert opened(buffer)["quick_check"] == "no_clean_stop"


def test_the_running_gateways_companion_writes_drop_the_record(buffer: Path) -> None:
    store = open_buffer(buffer)
    try:
        store.add_punches(make_punches("door-3", 5))
        store._companion.flush()  # what the periodic write does while punches are stored
        assert "clean_stop" not in companion(buffer)
    finally:
        store.close()
    assert "clean_stop" in companion(buffer)


def test_a_clean_stop_is_not_recorded_while_another_connection_holds_the_file(buffer: Path) -> None:
    other = sqlite3.connect(buffer)
    try:
        other.execute("SELECT count(*) FROM punches").fetchone()
        store = open_buffer(buffer)
        store.add_punches(make_punches("door-4", 5))
        store.close()
        assert BufferPaths(buffer).wal.exists()  # the other connection keeps it
        assert "clean_stop" not in companion(buffer)
    finally:
        other.close()
