"""Pulled terminals' rosters end to end: a ZK emulator over TCP with users enrolled (names in
GBK) -> `punchgate run` refreshes the roster through the terminal's worker -> the buffer file ->
`punchgate export`, whose name column shows them; a user enrolled later appears at the next
scheduled refresh."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess, run_punchgate


@pytest.fixture
async def emulator() -> AsyncIterator[ZkEmulator]:
    terminal = ZkEmulator(serial_number="ROSTER001", text_encoding="gbk")
    terminal.add_user("1", name="张伟", card=4711)
    terminal.add_user("2", name="Alice")
    terminal.generate_log(records=30, days=3, users=2, seed=1)
    await terminal.start()
    yield terminal
    await terminal.stop()


def _roster(buffer: Path) -> dict[str, Any]:
    """The stored roster of door-1, read as the export does (read-only, beside the daemon)."""
    if not buffer.exists():
        return {}
    db = sqlite3.connect(f"{buffer.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT data FROM device_meta WHERE device = 'door-1/roster'").fetchone()
    except sqlite3.OperationalError:  # the daemon has not created its tables yet
        return {}
    finally:
        db.close()
    return dict(json.loads(row[0])) if row else {}


async def test_names_from_the_terminal_reach_the_export(
    tmp_path: Path, gateway_factory: Callable[..., GatewayProcess], emulator: ZkEmulator
) -> None:
    buffer = tmp_path / "buffer.db"
    gateway = gateway_factory(
        [zk_terminal("door-1", emulator, encoding="gbk", poll_interval=30)],
        sections={"roster": {"refresh_hours": 0.001}, "health": {"gateway_clock": "trust"}},  # every 3.6 s
    )
    gateway.start()
    await gateway.wait_until_async(
        lambda: len(_roster(buffer).get("users", {})) == 2, timeout=60, message="the first roster read"
    )
    roster = _roster(buffer)
    assert roster["serial_number"] == "ROSTER001"
    assert roster["users"]["1"] == {"name": "张伟", "privilege": "user", "card": 4711}
    assert "password" not in json.dumps(roster)  # never secrets

    emulator.add_user("3", name="李娜")  # enrolled at the terminal later
    await gateway.wait_until_async(
        lambda: _roster(buffer).get("users", {}).get("3", {}).get("name") == "李娜",
        timeout=60,
        message="the scheduled refresh",
    )
    assert gateway.stop() == 0

    out = tmp_path / "export.csv"
    code, stdout, stderr = await run_punchgate(
        "export", "--buffer", str(buffer), "--from", "2000-01-01", "--to", "2100-01-01",
        "--format", "csv", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert len(rows) == 30, stdout
    names = {row["user_id"]: row["name"] for row in rows}
    assert names == {"1": "张伟", "2": "Alice"}
