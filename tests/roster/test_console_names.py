"""The console's punch search shows each user's name from the roster the gateway keeps, read
from a real buffer file: a pulled terminal's `<device>/roster` (gateway/roster.py) and a push
terminal's OPERLOG roster use the same key; a user no roster names gets none."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from punchgate.gateway.console.punch_query import PunchFilter, search
from punchgate.gateway.roster import roster_key
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches


def test_the_punch_search_names_users_from_the_roster(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = Store.open(
        BufferSettings.model_validate({"path": str(path), "min_free_disk_mb": 0}), gateway_id="gw"
    )
    try:
        punches = make_punches("door-1", 5)
        store.add_punches(punches)
        named = punches[0].user_id
        store.set_device_meta(roster_key("door-1"), {"users": {named: {"name": "张伟", "card": 1}}})
    finally:
        store.close()
    rows = search(path, PunchFilter(), ZoneInfo("UTC")).rows
    assert len(rows) == 5
    assert {row.name for row in rows if row.user_id == named} == {"张伟"}
    others = [row for row in rows if row.user_id != named]
    assert others and all(row.name == "" for row in others)
