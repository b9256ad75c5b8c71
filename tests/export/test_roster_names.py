"""Names in the export's name column come from every roster the gateway keeps in the buffer,
read from a real buffer file: a push terminal's OPERLOG roster (`<device>/roster`, users with
name, group, privilege), a pulled terminal's refreshed one (same key), and a terminal's own
meta; `<device>/roster` wins where both name a user."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from punchgate.sync.export import export
from punchgate.sync.export_model import ExportQuery
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches


def test_names_come_from_push_and_pulled_rosters(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        push, pulled = make_punches("push-1", 1), make_punches("door-1", 2)
        store.add_punches([*push, *pulled])
        operlog_user = {"name": "王芳", "privilege": 0, "group": "1", "has_password": False, "has_card": True}
        store.set_device_meta(
            "push-1/roster", {"serial_number": "P1", "users": {push[0].user_id: operlog_user}}
        )
        first, second = (p.user_id for p in pulled)
        store.set_device_meta("door-1", {"serial_number": "Z1", "roster": {first: "old name", second: "Bob"}})
        store.set_device_meta("door-1/roster", {"users": {first: {"name": "张伟", "card": 7}}})
    finally:
        store.close()
    out = tmp_path / "out.csv"
    query = ExportQuery(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))
    export(path, query, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    names = {(row["device"], row["user_id"]): row["name"] for row in rows}
    assert names == {
        ("push-1", push[0].user_id): "王芳",
        ("door-1", first): "张伟",
        ("door-1", second): "Bob",
    }
