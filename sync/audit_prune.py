"""Pruning the audit chain through a signed-off checkpoint (docs/audit.md, "Pruning").

The chain would otherwise grow with every punch ever stored. A retention purge, in its own
write transaction, prunes the entries older than the retention cutoff like this:

1. It walks those entries from the anchor on, recomputing every hash: a range that no longer
   holds is never pruned (that would launder a tampering; verify then names it).
2. It appends a `checkpoint` entry: the last pruned entry's seq and hash, how many entries and
   signed-off punch deletions it prunes, when, and who (the job and its retention). It carries
   what later checks still need from the pruned range: the expected state of every make-up
   punch entered there (`manual`) and the newest entry of the kinds the gateway looks back at
   (`last`: the config digest at start-up).
3. It appends `carried` entries: the `[id, digest]` pairs, copied from the pruned entries (not
   recomputed from the rows, so an edit made before the prune is still caught), of the punches
   those entries recorded that the buffer still holds (undelivered or recently delivered).
4. It moves `audit_anchor` to the last pruned entry, then deletes the entries up to it.

The checkpoint is an entry of the chain, so editing or deleting it breaks the chain like any
entry; the anchor row is checked against the newest checkpoint, and the first entry after the
anchor chains from its hash. Migration v7's triggers refuse any other order (a deletion past
the anchor, an anchor no checkpoint names), so the gateway's code cannot leave an unsigned gap.

Functions take the caller's SQLAlchemy connection inside its write transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from punchgate.sync import audit, buffer_schema

log = structlog.get_logger("punchgate.sync.store")

CARRY_LAST = ("config_loaded",)  # kinds whose newest entry the gateway reads back (last_of_kind)
MAX_PAIRS_PER_PRUNE = 50_000  # punch pairs walked per prune: bounds its memory and the write lock (0.2 s of Python for 50,000 one-punch entries, plus the reads)
_ID_CHUNK = 500  # ids per `IN (...)` lookup (below SQLite's bound-parameter limit)

_A = audit._A
_AC = audit._AC
_ANCHOR = buffer_schema.audit_anchor
_CHECKPOINT_SQL = (
    f"SELECT {_AC.entry} FROM {_A.name} WHERE {_AC.kind} = 'checkpoint'"
    f" AND json_extract({_AC.entry}, '$.pruned_through') = ? ORDER BY {_AC.seq} DESC LIMIT 1"
)
_WALK_SQL = f"SELECT {_AC.seq}, {_AC.kind}, {_AC.entry}, {_AC.hash} FROM {_A.name} WHERE {_AC.seq} > ? ORDER BY {_AC.seq}"


class PruneRefused(Exception):
    """The range to prune does not verify: pruning it would hide a tampering."""


@dataclass(frozen=True, slots=True)
class Pruned:
    through: int  # the last entry pruned
    entries: int
    carried: int  # punch pairs carried into `carried` entries
    head: audit.Head


def cutoff_text(before: float) -> str:
    """A unix time as the entries' `at` spells it, so the two compare as text."""
    moment = dt.datetime.fromtimestamp(before, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def note_manual(
    expected: dict[str, dict[str, Any]], seq: int, kind: str, entry: dict[str, Any]
) -> str | None:
    """Apply a `manual_*` entry to the expected make-up rows (by entry id, `_seq` the entry that
    last set it); returns a problem when it decides an entry nothing entered."""
    if kind == "manual_entered":
        fields = dict(entry["entry"])
        fields.update(status="pending", decided_by=None, decided_at=None, note=None, punch_id=None)
        expected[fields["entry_id"]] = {**fields, "_seq": seq}
        return None
    known = expected.get(entry["entry_id"])
    if known is None:
        return f"decides make-up punch {entry['entry_id']}, which no earlier entry entered"
    known.update({key: entry[key] for key in ("status", "decided_by", "decided_at", "note", "punch_id")})
    known["_seq"] = seq
    return None


def anchor_checkpoint(conn: Any, anchor_seq: int) -> dict[str, Any] | None:
    """The newest checkpoint entry naming `anchor_seq` as where it pruned to: it holds what the
    entries up to the anchor said (make-up punches, `last`). None when nothing was pruned."""
    if anchor_seq == 0:
        return None
    row = audit._raw(conn).execute(_CHECKPOINT_SQL, (anchor_seq,)).fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
    return value if isinstance(value, dict) else None


def _walk(raw: Any, after: int) -> Iterator[tuple[int, str, str, str]]:
    cursor = raw.execute(_WALK_SQL, (after,))
    try:
        while rows := cursor.fetchmany(500):
            yield from rows
    finally:
        cursor.close()


def prune(conn: Any, *, before: float, by: dict[str, Any]) -> Pruned | None:
    """Prune the entries appended before `before` (unix time) through a checkpoint; None when
    there is nothing to prune. Raises PruneRefused when that range does not verify."""
    raw = audit._raw(conn)
    anchor = raw.execute(audit._ANCHOR_SQL).fetchone()
    first_seq, previous = (0, audit.GENESIS) if anchor is None else (int(anchor[0]), str(anchor[1]))
    cutoff = cutoff_text(before)
    through, through_at, entries, signed_off, pairs_seen = first_seq, "", 0, 0, 0
    live: dict[str, str] = {}
    # What the pruned part said as of the anchor, carried by the checkpoint that set it.
    seed = anchor_checkpoint(raw, first_seq)
    manual: dict[str, dict[str, Any]] = dict(seed.get("manual", {})) if seed else {}
    last: dict[str, Any] = dict(seed.get("last", {})) if seed else {}
    for seq, kind, text, stored in _walk(raw, first_seq):
        entry = json.loads(text)
        if str(entry.get("at", "")) >= cutoff:
            break
        if seq != through + 1 or audit.chain_hash(previous, text) != stored:
            raise PruneRefused(f"audit entry #{seq} does not verify; run `punchgate audit verify`")
        if kind in ("punches", "carried"):
            try:
                pairs = audit.entry_pairs(entry)  # either version; carried ones are version 1
            except (ValueError, KeyError, TypeError):
                raise PruneRefused(
                    f"audit entry #{seq} cannot be read; run `punchgate audit verify`"
                ) from None
            live.update(pairs)
            pairs_seen += len(pairs)
        elif kind == "purge":
            for ident in entry["ids"]:
                live.pop(ident, None)
            signed_off += len(entry["ids"])
        elif kind.startswith("manual_"):
            note_manual(manual, seq, kind, entry)
        if kind in CARRY_LAST:
            last[kind] = entry
        through, previous, through_at, entries = seq, stored, str(entry.get("at", "")), entries + 1
        if pairs_seen >= MAX_PAIRS_PER_PRUNE:
            break  # the next purge goes on from here
    if entries == 0:
        return None
    carried = _still_held(raw, live)
    for fields in manual.values():
        fields.pop("_seq", None)
    checkpoint = {
        "pruned_from": first_seq + 1,
        "pruned_through": through,
        "pruned_hash": previous,
        "pruned_until": through_at,
        "entries_pruned": entries,
        "punches_signed_off": signed_off,
        "punches_carried": len(carried),
        "manual": manual,
        "last": last,
        "by": by,
    }
    head = audit.append(conn, "checkpoint", checkpoint)
    if carried:
        chunks = (
            {"punches": carried[start : start + audit.PUNCHES_PER_ENTRY]}
            for start in range(0, len(carried), audit.PUNCHES_PER_ENTRY)
        )
        head = audit.append_many(conn, "carried", chunks, at=head.at)
    # The order the v7 triggers insist on: the checkpoint exists, then the anchor, then the cut.
    if anchor is None:
        raw.execute(
            f"INSERT INTO {_ANCHOR.name} ({_ANCHOR.c.singleton.name}, {_ANCHOR.c.seq.name}, {_ANCHOR.c.hash.name})"
            " VALUES (1, ?, ?)",
            (through, previous),
        )
    else:
        raw.execute(
            f"UPDATE {_ANCHOR.name} SET {_ANCHOR.c.seq.name} = ?, {_ANCHOR.c.hash.name} = ?",
            (through, previous),
        )
    raw.execute(f"DELETE FROM {_A.name} WHERE {_AC.seq.name} <= ?", (through,))
    return Pruned(through, entries, len(carried), head)


def _still_held(raw: Any, live: dict[str, str]) -> list[list[str]]:
    """The pairs of `live` whose punch the buffer still holds, in chain order."""
    p = buffer_schema.punches
    ids = list(live)
    held: set[str] = set()
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        found = raw.execute(
            f"SELECT {p.c.id.name} FROM {p.name} WHERE {p.c.id.name} IN ({','.join('?' * len(chunk))})", chunk
        )
        held.update(str(row[0]) for row in found)
    return [[ident, live[ident]] for ident in ids if ident in held]
