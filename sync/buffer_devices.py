"""Per-device memory in the buffer: batch sequence numbers and what is known about a terminal.

Functions take the caller's connection; the store owns transactions and the write lock.

Batch sequence design: each MQTT batch of a device carries `seq`, strictly increasing across
restarts, gaps allowed (the contract says it is not a loss detector). Numbers are reserved
`SEQ_BLOCK` at a time in `batch_seq.reserved_until` and handed out from memory, so a publish
costs no extra commit. Invariant: a number is handed out only after a committed reservation
covers it, so after a crash the next number starts past the whole reserved block and never
repeats one already used.

Device meta: one JSON object per terminal (last serial number, last record count, ...) that the
worker reads at start and replaces as it goes; `{}` when nothing is known.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Select, bindparam, case, func, select
from sqlalchemy.dialects.sqlite import insert

from punchgate.sync import buffer_schema

SEQ_BLOCK = 1000
_IN_CHUNK = 500  # devices per IN list: well under SQLite's bound on parameters

_SEQ = buffer_schema.batch_seq
_META = buffer_schema.device_meta


def reserve_seq_block(conn: Connection, device: str, at_least: int = 1) -> tuple[int, int]:
    """Commit-ready reservation of the next block (`SEQ_BLOCK` numbers, or `at_least` if more):
    returns (first seq, last seq reserved).

    Run it in a write (IMMEDIATE) transaction and hand numbers out only after it commits.
    """
    return reserve_seq_blocks(conn, {device: at_least})[device]


def reserve_seq_blocks(conn: Connection, at_least: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """`reserve_seq_block` for each device of `at_least` at once: one read and at most two
    statements, however many devices. The first drain after a restart reserves a block for
    every terminal with something pending: two statements each were 10,000 at 5,000 terminals,
    2.6 % of the first 45 s's busy samples (py-spy)."""
    t = _SEQ.c
    previous: dict[str, int] = {}
    names = list(at_least)
    for n in range(0, len(names), _IN_CHUNK):
        chunk = names[n : n + _IN_CHUNK]
        for device, until in conn.execute(select(t.device, t.reserved_until).where(t.device.in_(chunk))):
            previous[str(device)] = int(until or 0)
    blocks: dict[str, tuple[int, int]] = {}
    for device, wanted in at_least.items():
        start = previous.get(device, 0) + 1
        blocks[device] = (start, start + max(SEQ_BLOCK, wanted) - 1)
    new = [{"device": d, "reserved_until": r} for d, (_s, r) in blocks.items() if d not in previous]
    moved = [{"d": d, "r": r} for d, (_s, r) in blocks.items() if d in previous]
    if new:
        conn.execute(_SEQ.insert(), new)
    if moved:
        conn.execute(
            _SEQ.update().where(t.device == bindparam("d")).values(reserved_until=bindparam("r")), moved
        )
    return blocks


def get_device_meta(conn: Connection, device: str) -> dict[str, Any]:
    """What is remembered about a terminal; {} if nothing (or not a JSON object)."""
    t = _META.c
    text = conn.execute(select(t.data).where(t.device == device)).scalar_one_or_none()
    if text is None:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


# A terminal's roster is kept as meta `<device>/roster` (gateway/roster.py, the push listener;
# the zk_push driver, which cannot import sync, spells the same key in its uploads module).
ROSTER_SUFFIX = "/roster"
# What a stop keeps of a terminal's reconciliation digests (`sync/digests.py`): read by the
# digest publisher alone, never by a start-up's `all_device_meta`.
DIGESTS_SUFFIX = "/digests"


def all_device_meta(conn: Connection) -> dict[str, dict[str, Any]]:
    """What is remembered about every terminal, by key, in one query; of a roster
    (`<device>/roster`) only its `refreshed_at`, which is all a start-up needs: the user lists
    (about 12 KB of JSON a terminal of 300 people) parsed for a whole fleet at once were a
    start-up peak of ~93 MiB at 1,000 terminals, freed at once but leaving the allocator's
    arenas that size for good."""
    t = _META.c
    is_roster = func.substr(t.device, -len(ROSTER_SUFFIX)) == ROSTER_SUFFIX
    is_digests = func.substr(t.device, -len(DIGESTS_SUFFIX)) == DIGESTS_SUFFIX
    dated = func.json_object("refreshed_at", func.json_extract(t.data, "$.refreshed_at"))
    return _metas(conn, select(t.device, case((is_roster, dated), else_=t.data)).where(~is_digests))


def device_metas_ending(conn: Connection, suffix: str) -> dict[str, dict[str, Any]]:
    """The metas whose key ends with `suffix` (`<device>/digests`, say), by key."""
    t = _META.c
    return _metas(conn, select(t.device, t.data).where(func.substr(t.device, -len(suffix)) == suffix))


def _metas(conn: Connection, query: Select[Any]) -> dict[str, dict[str, Any]]:
    """(key, JSON text) rows as metas by key; a text that is not a JSON object is skipped."""
    found: dict[str, dict[str, Any]] = {}
    for device, text in conn.execute(query).all():
        value = json.loads(text)
        if isinstance(value, dict):
            found[str(device)] = value
    return found


def meta_text(data: dict[str, Any]) -> str:
    """A terminal's meta as the buffer stores it: equal texts, equal metas."""
    return json.dumps(data, sort_keys=True, default=str)


def set_device_metas(conn: Connection, metas: Mapping[str, dict[str, Any]], now: float) -> None:
    """Replace what is remembered about each terminal of `metas` (JSON-serialisable values
    only), in one statement."""
    statement = insert(_META)
    statement = statement.on_conflict_do_update(
        index_elements=[_META.c.device],
        set_={"data": statement.excluded.data, "updated_at": statement.excluded.updated_at},
    )
    rows = [{"device": device, "data": meta_text(data), "updated_at": now} for device, data in metas.items()]
    conn.execute(statement, rows)
