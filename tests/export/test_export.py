"""`punchgate export` against a real buffer file: CSV and XLSX read back (csv, openpyxl) and
compared with the buffer; names from the rosters; make-up details; bad input refused by name."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest

from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punch, make_punches
from tests.support.gateway import REPO

# make_punch: local times from 2024-03-04 07:00:00, one second apart; users 1000..1249.
DAY = "2024-03-04"


@pytest.fixture
def buffer(tmp_path: Path) -> Path:
    path = tmp_path / "buffer.db"
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        store.add_punches(make_punches("door-1", 600))
        store.add_punches(make_punches("door-2", 300, start=100))
        store.add_punches([make_punch("door-2", 5000, source="manual")])
        store.set_device_meta(
            "door-1", {"serial_number": "SN-door-1", "roster": {"1000": {"name": "张三"}, "1001": "Zoë"}}
        )
    finally:
        store.close()
    return path


def export(buffer: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", "export", "--buffer", str(buffer), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def _buffer_records(buffer: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(buffer) as db:
        return {
            ident: json.loads(payload) for ident, payload in db.execute("SELECT id, payload FROM punches")
        }


def test_csv_is_the_buffer_with_names_in_utf8_with_bom(buffer: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.csv"
    result = export(buffer, "--from", DAY, "--to", DAY, "--format", "csv", "--out", str(out))
    assert result.returncode == 0, result.stderr
    raw = out.read_bytes()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8")[1:])))
    records = _buffer_records(buffer)
    assert len(rows) == len(records) == 901 and f"{len(rows)} punches written" in result.stdout
    for row in rows:
        record = records[row["record_id"]]
        assert row["local_time"] == record["local_time"] and row["utc_time"] == record["utc_time"]
        assert (row["user_id"], row["serial"], row["source"]) == (
            record["user_id"],
            record["serial"],
            record["source"],
        )
        assert (
            row["state_name"] == (record["state"]["name"] or "")
            and int(row["verify"]) == record["verify"]["code"]
        )
    by_device = [row["device"] for row in rows]
    assert by_device == sorted(by_device)  # a terminal after the other, each oldest first
    names = {row["user_id"]: row["name"] for row in rows if row["device"] == "door-1"}
    assert names["1000"] == "张三" and names["1001"] == "Zoë" and names["1002"] == ""
    (manual,) = [row for row in rows if row["source"] == "manual"]
    assert manual["manual_reason"] == "forgot the badge" and manual["manual_approved_by"] == "Bob"
    assert manual["manual_entered_at"].endswith("Z")


def test_xlsx_has_a_summary_and_a_sheet_per_terminal(buffer: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.xlsx"
    result = export(buffer, "--from", DAY, "--to", DAY, "--format", "xlsx", "--out", str(out))
    assert result.returncode == 0, result.stderr
    book = openpyxl.load_workbook(out)
    assert book.sheetnames == ["Summary", "door-1", "door-2"]
    records = _buffer_records(buffer)
    seen = 0
    for name in ("door-1", "door-2"):
        sheet = book[name]
        assert sheet.freeze_panes == "A2" and sheet.column_dimensions["E"].width == 20
        header = [cell.value for cell in sheet[1]]
        for values in sheet.iter_rows(min_row=2, values_only=True):
            row = dict(zip(header, values, strict=True))
            record = records[row["record_id"]]
            assert isinstance(row["local_time"], dt.datetime)  # a date cell, not text
            assert row["local_time"].isoformat() == record["local_time"]
            assert row["utc_time"].isoformat() + "Z" == record["utc_time"]
            assert row["device"] == name
            seen += 1
    assert seen == len(records)
    summary = book["Summary"]
    header = [cell.value for cell in summary[1]]
    rows = [
        dict(zip(header, values, strict=True)) for values in summary.iter_rows(min_row=2, values_only=True)
    ]
    one = next(r for r in rows if r["user_id"] == "1000")
    assert one["name"] == "张三" and one["count"] == sum(
        1 for r in records.values() if r["user_id"] == "1000"
    )
    ins = sorted(
        r["local_time"]
        for r in records.values()
        if r["user_id"] == "1000" and r["state"]["name"] == "check_in"
    )
    assert one["first_in"].isoformat() == ins[0]
    assert sum(r["count"] for r in rows) == len(records)
    assert sum(r["manual"] for r in rows) == 1


def test_filters_by_device_user_and_time(buffer: Path, tmp_path: Path) -> None:
    out = tmp_path / "some.csv"
    result = export(buffer, "--from", f"{DAY}T07:01:00", "--to", f"{DAY}T07:02:00", "--device", "door-2",
                    "--user", "1100", "--user", "1101", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert (
        rows
        and {r["device"] for r in rows} == {"door-2"}
        and {r["user_id"] for r in rows} <= {"1100", "1101"}
    )
    assert all(f"{DAY}T07:01:00" <= r["local_time"] < f"{DAY}T07:02:00" for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2024-03-05", "--to", "2024-03-01"], "is not before --to"),
        (["--from", DAY, "--to", DAY, "--device", "door-9"], "unknown terminal 'door-9'"),
        (["--from", "2020-01-01", "--to", "2020-01-31"], "is outside what the buffer holds"),
        (["--from", "yesterday", "--to", DAY], "is not a date"),
        (
            ["--from", DAY, "--to", DAY, "--out", "/nonexistent/dir/x.csv"],
            "the folder /nonexistent/dir does not exist",
        ),
    ],
)
def test_bad_input_is_refused_by_name(buffer: Path, args: list[str], message: str) -> None:
    result = export(buffer, *args)
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_a_missing_buffer_and_a_running_writer(buffer: Path, tmp_path: Path) -> None:
    assert "no such buffer file" in export(tmp_path / "nope.db", "--from", DAY, "--to", DAY).stderr
    # The daemon holds the buffer open and writes on: a WAL reader exports what was committed.
    store = Store.open(
        BufferSettings.model_validate({"path": str(buffer), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        store.add_punches(make_punches("door-1", 10, start=600))
        out = tmp_path / "live.csv"
        assert export(buffer, "--from", DAY, "--to", DAY, "--out", str(out)).returncode == 0
        assert len(out.read_text(encoding="utf-8-sig").splitlines()) == 1 + 911
    finally:
        store.close()
