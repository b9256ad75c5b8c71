"""The audit chain: every stored punch and every administrative action, hash-linked (docs/audit.md).

Each entry is a JSON object with at least `seq` (1, 2, 3, ...), `kind` and `at` (UTC), stored
as its canonical JSON (`canonical`: sorted keys, no spaces, UTF-8) in table `audit`, next to
`hash` = SHA-256 (hex) over the previous entry's hash (64 zeros before the first entry, or the
anchor's hash after a prune) followed by that JSON text. Changing, removing or reordering an
entry breaks every hash after it; rewriting the whole chain consistently is caught against a
head published earlier (`{base}/audit`, `punchgate audit verify --head`).

What the entries cover:

* `punches`: the punches one commit stored, up to `PUNCHES_PER_ENTRY` per entry: their record
  ids and digests (`punch_digest`: every column of the row except `pk` and `delivered_at`,
  which changes when the broker acknowledges). Version 1 entries (before issue 16) list
  `[id, hex digest]` pairs; version 2 (`"v": 2`) the ids and the digests, each as one base64
  text of 16-byte values (`entry_pairs` reads both). The entry is appended in the same transaction as the insert, so
  no punch is ever stored outside the chain.
* `purge`: the ids a retention purge deleted (the deletions are signed off, not gaps).
* `checkpoint` and `carried`: a retention purge pruned the entries before it (`audit_prune`).
* administrative actions (`manual_entered`, `manual_approved`, `manual_rejected`, `replay`,
  `terminal_log_cleared`, `config_loaded`, `chain_started`) with what they did.

Functions take the caller's SQLAlchemy connection inside its write transaction; the store owns
transactions and the write lock. Verification is `punchgate.sync.audit_verify`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from punchgate.sync import buffer_schema
from punchgate.sync.buffer_identity import now_text
from punchgate.sync.settings import Strict

GENESIS = "0" * 64  # the "previous hash" of the first entry
PUNCHES_PER_ENTRY = 1000  # punches per `punches` entry (about 43 bytes each in version 2)
IDS_PER_PURGE_ENTRY = 5000  # deleted ids per `purge` entry
DIGEST_BYTES = 16  # a punch digest: the first 128 bits of SHA-256 (32 hex digits)

_A = buffer_schema.audit
_AC = _A.c
_ANCHOR = buffer_schema.audit_anchor
_LAST_SQL = (
    f"SELECT {_AC.seq}, {_AC.hash}, {_AC.kind}, {_AC.entry} FROM {_A.name} ORDER BY {_AC.seq} DESC LIMIT 1"
)
# Built once: formatting a SQLAlchemy column into text compiles it (about 0.25 ms a time, as
# much as the rest of a live punch's chain work; bench/bench_audit.py).
_TAIL_SQL = f"SELECT {_AC.seq}, {_AC.hash} FROM {_A.name} ORDER BY {_AC.seq} DESC LIMIT 1"
_ANCHOR_SQL = f"SELECT {_ANCHOR.c.seq}, {_ANCHOR.c.hash} FROM {_ANCHOR.name}"
_INSERT_SQL = (
    f"INSERT INTO {_A.name} ({_AC.seq.name}, {_AC.kind.name}, {_AC.entry.name}, {_AC.hash.name})"
    " VALUES (?, ?, ?, ?)"
)
_COUNT_SQL = f"SELECT count(*) FROM {_A.name}"
_LAST_OF_KIND_SQL = f"SELECT {_AC.entry} FROM {_A.name} WHERE {_AC.kind} = ? ORDER BY {_AC.seq} DESC LIMIT 1"


class AuditSettings(Strict):
    """`[audit]`: how often the chain's head is published (it is also published on every
    administrative action)."""

    publish_interval_seconds: float = Field(
        300,
        ge=10,
        le=86400,
        description="seconds between retained publishes of the audit chain's head on {base}/audit "
        "(it also goes out after every administrative action and on every connect)",
    )


@dataclass(frozen=True, slots=True)
class Head:
    """The newest entry of the chain: what `{base}/audit` publishes."""

    seq: int
    hash: str
    kind: str
    at: str  # UTC, ISO 8601 with milliseconds and Z

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "kind": self.kind, "at": self.at}


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # canonical for lists and strings


def canonical(value: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 characters as they are."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(previous: str, entry_text: str) -> str:
    """SHA-256 (hex) over the previous entry's hash (hex text) followed by the entry's JSON."""
    return hashlib.sha256((previous + entry_text).encode("utf-8")).hexdigest()


def punch_digest(row: Sequence[Any]) -> str:
    """The digest of one stored punch row, in `buffer_outbox.INSERT_COLUMNS` order: id, device,
    user_id, utc_time, source, payload, raw, stored_at.

    SHA-256 (its first `DIGEST_BYTES` bytes, in hex) over the UTF-8 text of the fields joined
    by U+001E, in the order id, device, len(user_id):user_id, utc_time, source,
    repr(stored_at), raw as hex, payload. Only the user id may hold any character, so it
    carries its length; the payload (JSON, control characters escaped) comes last."""
    ident, device, user_id, utc_time, source, payload, raw, stored_at = row
    # The same text as digest_rows (tests/audit/test_entry_versions.py holds the two together);
    # written out here for `verify`, which calls it once a row from SQL.
    text = (
        f"{ident}\x1e{device}\x1e{len(user_id)}:{user_id}\x1e{utc_time}\x1e{source}\x1e{stored_at!r}"
        f"\x1e{raw.hex()}\x1e{payload}"
    )
    return hashlib.sha256(text.encode()).digest()[:DIGEST_BYTES].hex()


def digest_rows(rows: Sequence[Sequence[Any]]) -> tuple[list[Any], list[bytes]]:
    """The ids of `rows` and their `punch_digest`s as bytes, in order. This runs for every
    punch stored, inside the commit (bench/bench_audit.py): the text is one f-string in a
    list comprehension (a loop with appends costs a fifth more), and `repr(stored_at)` is
    formatted once when it is the first row's float object (a commit's rows share one;
    formatting a float costs more than the rest of the text). `raw.hex()` serves bytes,
    bytearray and memoryview alike; a `bytes(raw)` around it cost 0.2 ms a 1,000 rows."""
    if not rows:
        return [], []
    sha256 = hashlib.sha256
    first = rows[0][7]
    spelled = repr(first)
    digests = [
        sha256(
            f"{ident}\x1e{device}\x1e{len(user_id)}:{user_id}\x1e{utc_time}\x1e{source}"
            f"\x1e{spelled if stored_at is first else repr(stored_at)}\x1e{raw.hex()}\x1e{payload}".encode()
        ).digest()[:DIGEST_BYTES]
        for ident, device, user_id, utc_time, source, payload, raw, stored_at in rows
    ]
    return [row[0] for row in rows], digests


def ids_text(ids: Sequence[Any]) -> str:
    """The canonical JSON of a list of ids (what `canonical` spells), put together with one
    join when no id needs escaping (ids are hex in practice): the JSON encoder costs several
    times as much."""
    try:
        plain = _NEEDS_ESCAPE.search("".join(ids)) is None
    except TypeError:  # not all text
        plain = False
    if not plain:
        return _JSON.encode(list(ids))
    return '["' + '","'.join(ids) + '"]' if ids else "[]"


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')  # what JSON escapes in a string (ensure_ascii off)


def ids_field(ids: Sequence[Any]) -> str:
    """A version 2 entry's ids, as its canonical JSON member: `"id_bytes":"<base64>"` (16 bytes
    an id) when every id is 32 lowercase hex digits, as record ids are (gateway/normalize.py,
    gateway/manual_records.py), else `"ids":[...]`. 21 bytes an id instead of 35: the entry is
    written and fsynced with the rows in every commit."""
    try:
        joined = "".join(ids)
    except TypeError:  # not all text
        joined = ""
    if joined and set(map(len, ids)) == {32}:
        try:
            packed = bytes.fromhex(joined)
        except ValueError:  # not hex
            packed = b""
        # fromhex also takes capitals and spaces: only text that spells its bytes back is packed.
        if packed and packed.hex() == joined:
            return f'"id_bytes":"{base64.b64encode(packed).decode("ascii")}"'
    return f'"ids":{ids_text(ids)}'


def entry_pairs(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """The `[id, digest (hex)]` pairs a `punches` or `carried` entry records, in either version:
    version 1 lists the pairs (`punches`); version 2 (`"v": 2`, `punches` entries since issue
    16) holds the ids, either as a list (`ids`) or, when all are 32 lowercase hex digits, as one
    base64 text of their 16 bytes each (`id_bytes`), and their digests, in the same order, as
    one base64 text of `DIGEST_BYTES` bytes each (`digests`). Raises ValueError when the entry
    does not add up."""
    if entry.get("v") != 2:
        return [(str(ident), str(digest)) for ident, digest in entry["punches"]]
    if ("ids" in entry) == ("id_bytes" in entry):
        raise ValueError("a version 2 punches entry holds either `ids` or `id_bytes`")
    ids = entry["ids"] if "ids" in entry else _unpack(entry["id_bytes"], "id_bytes")
    if not isinstance(ids, list):
        raise ValueError("its `ids` are not a list")
    raw = _unpack(entry.get("digests"), "digests")
    if len(raw) != len(ids):
        raise ValueError(f"it names {len(ids)} punches but holds {len(raw)} digests")
    return [(str(ident), digest) for ident, digest in zip(ids, raw, strict=True)]


def _unpack(text: Any, name: str) -> list[str]:
    """A base64 text of 16-byte values as hex strings."""
    if not isinstance(text, str):
        raise ValueError(f"its `{name}` are not a text")
    try:
        packed = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"its `{name}` are not base64") from None
    if len(packed) % 16:
        raise ValueError(f"its `{name}` are not 16 bytes each")
    return [packed[at : at + 16].hex() for at in range(0, len(packed), 16)]


# --- reading ------------------------------------------------------------------------------------
def head(conn: Any) -> Head | None:
    """The newest entry; None while the chain is empty. `conn`: SQLAlchemy or sqlite3."""
    row = _fetchone(conn, _LAST_SQL)
    if row is None:
        return None
    seq, digest, kind, entry = row
    at = str(json.loads(entry).get("at", ""))
    return Head(int(seq), str(digest), str(kind), at)


def entry_count(conn: Any) -> int:
    row = _fetchone(conn, _COUNT_SQL)
    return int(row[0]) if row else 0


def last_of_kind(conn: Any, kind: str) -> dict[str, Any] | None:
    """The newest entry of `kind` as a dict; None when there is none."""
    row = _fetchone(conn, _LAST_OF_KIND_SQL, (kind,))
    if row is None:
        # Pruned: the newest checkpoint carries it (audit_prune.CARRY_LAST).
        checkpoint = _fetchone(conn, _LAST_OF_KIND_SQL, ("checkpoint",))
        if checkpoint is None:
            return None
        carried = json.loads(checkpoint[0]).get("last", {}).get(kind)
        return carried if isinstance(carried, dict) else None
    value = json.loads(row[0])
    return value if isinstance(value, dict) else None


def _raw(conn: Any) -> Any:
    """The DB-API connection under a SQLAlchemy one (the same transaction), or `conn` itself:
    the chain's statements run once per commit, where SQLAlchemy's per-statement work would
    cost more than SQLite's (bench/bench_audit.py)."""
    fairy = getattr(conn, "connection", None)
    return getattr(fairy, "dbapi_connection", None) or conn


def _fetchone(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return _raw(conn).execute(sql, params).fetchone()


def _previous(conn: Any) -> tuple[int, str]:
    """(seq, hash) the next entry chains from: the last entry, else the anchor, else genesis."""
    row = _fetchone(conn, _TAIL_SQL)
    if row is None:
        row = _fetchone(conn, _ANCHOR_SQL)
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


# --- appending (inside the caller's write transaction) --------------------------------------------
def append(conn: Any, kind: str, data: dict[str, Any], *, at: str | None = None) -> Head:
    """Append one entry (`data` plus seq, kind and at); returns the new head."""
    return append_many(conn, kind, [data], at=at)


def append_many(conn: Any, kind: str, items: Iterable[dict[str, Any]], *, at: str | None = None) -> Head:
    """Append one entry per item, in order, in one statement; returns the new head."""
    at = at or now_text()
    seq, previous = _previous(conn)
    rows = []
    for data in items:
        seq += 1
        text = canonical({**data, "seq": seq, "kind": kind, "at": at})
        previous = chain_hash(previous, text)
        rows.append((seq, kind, text, previous))
    if not rows:
        raise ValueError("nothing to append")
    _raw(conn).executemany(_INSERT_SQL, rows)
    return Head(seq, previous, kind, at)


def append_punches(conn: Any, rows: Sequence[Sequence[Any]], *, at: str | None = None) -> Head:
    """Entries covering punch rows just inserted (in `INSERT_COLUMNS` order), in this transaction.

    Version 2 entries (`entry_pairs`): the ids and the digests as base64 texts, 43 bytes a
    punch instead of the pairs' 72 in hex (the entry is written and fsynced with the rows).
    This runs in every commit of punches (a live punch is a commit of its own), so the
    entry's canonical text is put together directly rather than through `canonical` (sorted
    keys: at, digests, id_bytes or ids, kind, seq, v; the same text, tests/audit/test_chain.py), and one
    row is one execute."""
    at = at or _now_at()
    seq, previous = _previous(conn)
    prefix = f'{{"at":{_JSON.encode(at)},"digests":"'
    entries = []
    for start in range(0, len(rows), PUNCHES_PER_ENTRY):
        ids, digests = digest_rows(rows[start : start + PUNCHES_PER_ENTRY])
        seq += 1
        text = (
            f'{prefix}{base64.b64encode(b"".join(digests)).decode("ascii")}",{ids_field(ids)}'
            f',"kind":"punches","seq":{seq},"v":2}}'
        )
        previous = chain_hash(previous, text)
        entries.append((seq, "punches", text, previous))
    if not entries:
        raise ValueError("nothing to append")
    raw = _raw(conn)
    if len(entries) == 1:
        raw.execute(_INSERT_SQL, entries[0])
    else:
        raw.executemany(_INSERT_SQL, entries)
    return Head(seq, previous, "punches", at)


def _now_at() -> str:
    """`now_text()` (UTC, milliseconds, Z) at a tenth of its cost: time.strftime on whole
    seconds instead of a datetime's."""
    now = time.time()
    whole = int(now)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{int((now - whole) * 1000):03d}Z"


def append_purge(conn: Any, ids: Sequence[str], *, before: float, at: str | None = None) -> Head:
    """Entries signing off the punches a retention purge deletes in this transaction."""
    chunks = (
        {"ids": list(ids[start : start + IDS_PER_PURGE_ENTRY]), "delivered_before": before}
        for start in range(0, len(ids), IDS_PER_PURGE_ENTRY)
    )
    return append_many(conn, "purge", chunks, at=at)
