"""`punchgate audit verify`: recompute the audit chain and hold the buffer's tables to it.

Reads the buffer file read-only (`mode=ro`: it can run beside the daemon; WAL readers see the
last commit). What it proves, and how (docs/audit.md):

* the chain is whole: entries numbered without gaps from the anchor (or 1), each one's hash
  recomputed from the previous hash and its JSON text; the first entry that does not match is
  named (an edit, a deletion or a reordering of entries all end there);
* the punches table matches the chain: every stored punch is in a `punches` entry with the
  digest of its row as stored, every punch an entry names is still there unless a later
  `purge` entry signed its deletion off, and no punch is in the table without an entry;
* the make-up punches table matches the chain: each row is what its `manual_*` entries say;
* a pruned chain (docs/audit.md, "Pruning") starts right after `audit_anchor`, whose seq and
  hash the newest `checkpoint` entry names: moving or deleting the anchor, pruning past the
  checkpoint or editing it are each named; the checkpoint's `carried` entries and make-up
  state stand in for the entries it pruned;
* given a head published earlier (`{base}/audit`, kept by central or saved to a file): the
  chain still holds that entry with that hash. A truncated chain (its tail cut off) and a
  consistent forgery (a chain recomputed from scratch) both fail here, and only here: the
  head is the copy nobody with access to the buffer can change.

The per-punch bookkeeping lives in TEMP tables of the read-only connection (on disk, not in
memory), so a buffer of millions of punches is checked in bounded memory.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punchgate.sync import audit, audit_prune, buffer_outbox, buffer_schema, manual

MAX_FINDINGS = 50  # per check; the first one is what matters


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """Something that breaks the chain: the entry it is found at (None: not at an entry), what."""

    seq: int
    problem: str


@dataclass
class VerifyReport:
    path: Path
    entries: int = 0
    first_seq: int = 0
    last: audit.Head | None = None
    punches_checked: int = 0
    manual_checked: int = 0
    head_checked: dict[str, Any] | None = None
    head_pruned: int | None = None  # the checkpoint that pruned the published head's entry
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_broken(self) -> Finding | None:
        return min(self.findings) if self.findings else None

    def lines(self) -> list[str]:
        last = self.last
        span = f"entries #{self.first_seq}..#{last.seq}" if last else "no entries"
        if self.ok:
            out = [
                f"audit chain of {self.path}: OK ({span}, {self.punches_checked} punches, {self.manual_checked} make-up punches checked)"
            ]
        else:
            first = self.first_broken
            assert first is not None
            out = [f"audit chain of {self.path}: BROKEN at entry #{first.seq}: {first.problem}"]
        if last is not None:
            out.append(f"  head: #{last.seq} {last.kind} at {last.at}, hash {last.hash}")
        if self.head_checked is not None:
            head = self.head_checked
            verdict = (
                "matches"
                if not any(f.problem.startswith("published head") for f in self.findings)
                else "does NOT match"
            )
            if self.head_pruned is not None and verdict == "matches":
                verdict = (
                    f"older than checkpoint #{self.head_pruned}, which pruned its entry: not checked "
                    "(give a head published after the checkpoint)"
                )
            out.append(
                f"  published head #{head.get('seq')} ({head.get('as_of') or head.get('at') or 'undated'}): {verdict}"
            )
        else:
            out.append(
                "  no published head given: a truncated or wholly rewritten chain cannot be told apart (use --head FILE or --from-broker)"
            )
        for finding in sorted(self.findings)[1 : 1 + 20]:
            out.append(f"  also: entry #{finding.seq}: {finding.problem}")
        if len(self.findings) > 21:
            out.append(f"  ... and {len(self.findings) - 21} more")
        return out


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the buffer (refuses to create a missing file)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such buffer file")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA temp_store = FILE")
    return conn


def verify(path: Path, head: dict[str, Any] | None = None) -> VerifyReport:
    """Recompute the chain of the buffer at `path` and check the tables (and `head`) against it."""
    report = VerifyReport(path)
    conn = connect_read_only(path)
    try:
        conn.execute("BEGIN")  # one snapshot for every read below
        _prepare(conn)
        expected_manual = _walk_chain(conn, report)
        _check_punches(conn, report)
        _check_manual(conn, report, expected_manual)
        if head is not None:
            _check_head(conn, report, head)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    report.findings.sort()
    return report


def _prepare(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TEMP TABLE chain_punch (id TEXT PRIMARY KEY, digest TEXT NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("CREATE TEMP TABLE purged (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID")
    conn.create_function("pg_digest", 8, lambda *row: audit.punch_digest(row), deterministic=True)


def _entries(conn: sqlite3.Connection) -> Iterator[tuple[int, str, str, str]]:
    a = buffer_schema.audit
    yield from conn.execute(
        f"SELECT {a.c.seq}, {a.c.kind}, {a.c.entry}, {a.c.hash} FROM {a.name} ORDER BY {a.c.seq}"
    )


def _walk_chain(conn: sqlite3.Connection, report: VerifyReport) -> dict[str, dict[str, Any]]:
    """Recompute every hash; note the punches, purges and make-up punches the entries record."""
    anchor = conn.execute(audit._ANCHOR_SQL).fetchone()
    previous_seq, previous_hash = (0, audit.GENESIS) if anchor is None else (int(anchor[0]), str(anchor[1]))
    if anchor is None:
        previous_seq, previous_hash = _lost_anchor(conn, report)
    report.first_seq = previous_seq + 1
    expected_manual: dict[str, dict[str, Any]] = {}
    seed = audit_prune.anchor_checkpoint(conn, previous_seq)
    if seed is not None:
        # The make-up punches the pruned entries recorded, as of the anchor.
        for entry_id, fields in seed.get("manual", {}).items():
            expected_manual[entry_id] = {**fields, "_seq": int(seed.get("seq", previous_seq + 1))}
    checkpoint: tuple[int, dict[str, Any]] | None = None  # the newest one
    for seq, kind, text, stored_hash in _entries(conn):
        report.entries += 1
        if seq != previous_seq + 1:
            missing = (
                f"#{previous_seq + 1}" if seq == previous_seq + 2 else f"#{previous_seq + 1}..#{seq - 1}"
            )
            _add(report, Finding(previous_seq + 1, f"entry {missing} is missing from the chain (deleted)"))
        elif audit.chain_hash(previous_hash, text) != stored_hash:
            _add(
                report,
                Finding(
                    seq, f"entry ({kind}) does not match its hash: it, or the entry before it, was changed"
                ),
            )
        previous_seq, previous_hash = seq, stored_hash
        try:
            entry = json.loads(text)
        except ValueError:
            _add(report, Finding(seq, "entry is not JSON"))
            continue
        if not isinstance(entry, dict) or entry.get("seq") != seq or entry.get("kind") != kind:
            _add(report, Finding(seq, "entry's seq or kind differs from its row (the row was changed)"))
            continue
        report.last = audit.Head(seq, stored_hash, kind, str(entry.get("at", "")))
        if kind == "checkpoint":
            checkpoint = (seq, entry)
        _note(conn, report, seq, kind, entry, expected_manual)
    if anchor is not None:
        _check_anchor(report, (int(anchor[0]), str(anchor[1])), checkpoint)
    return expected_manual


def _lost_anchor(conn: sqlite3.Connection, report: VerifyReport) -> tuple[int, str]:
    """No anchor row, yet the chain does not start at #1: when a checkpoint names the pruning
    that explains it, the anchor row was deleted; carry on from what the checkpoint names."""
    a = buffer_schema.audit
    first = conn.execute(f"SELECT min({a.c.seq}) FROM {a.name}").fetchone()[0]
    if first is None or int(first) == 1:
        return 0, audit.GENESIS
    named = conn.execute(
        f"SELECT {a.c.seq}, json_extract({a.c.entry}, '$.pruned_hash') FROM {a.name}"
        f" WHERE {a.c.kind} = 'checkpoint' AND json_extract({a.c.entry}, '$.pruned_through') = ?"
        f" ORDER BY {a.c.seq} DESC LIMIT 1",
        (int(first) - 1,),
    ).fetchone()
    if named is None:
        return 0, audit.GENESIS  # the walk names the missing entries
    _add(
        report,
        Finding(
            int(first),
            f"the audit anchor was deleted: checkpoint #{named[0]} pruned entries through #{int(first) - 1}, "
            "but the row the chain starts from is gone",
        ),
    )
    return int(first) - 1, str(named[1])


def _check_anchor(
    report: VerifyReport, anchor: tuple[int, str], checkpoint: tuple[int, dict[str, Any]] | None
) -> None:
    """The anchor must be where the newest checkpoint says the chain was pruned to."""
    seq, digest = anchor
    if checkpoint is None:
        _add(
            report,
            Finding(
                seq + 1,
                f"the chain starts after #{seq} (audit_anchor), but no checkpoint entry signs that pruning off "
                "(entries were deleted, the checkpoint with them)",
            ),
        )
        return
    at, entry = checkpoint
    if entry.get("pruned_through") != seq or entry.get("pruned_hash") != digest:
        _add(
            report,
            Finding(
                seq + 1,
                f"the audit anchor (#{seq}) is not where checkpoint #{at} pruned the chain to "
                f"(#{entry.get('pruned_through')}): entries were removed past the checkpoint, or the anchor was changed",
            ),
        )


def _note(
    conn: sqlite3.Connection,
    report: VerifyReport,
    seq: int,
    kind: str,
    entry: dict[str, Any],
    expected_manual: dict[str, dict[str, Any]],
) -> None:
    if kind in ("punches", "carried"):
        try:
            pairs = audit.entry_pairs(entry)
        except (ValueError, KeyError, TypeError) as exc:
            _add(report, Finding(seq, f"entry's punches cannot be read: {exc}"))
            return
        # A purged punch the terminal still held comes back when it is read again: its latest
        # entry is the one its row must match.
        conn.executemany(
            "INSERT OR REPLACE INTO chain_punch (id, digest, seq) VALUES (?, ?, ?)",
            [(i, d, seq) for i, d in pairs],
        )
    elif kind == "purge":
        conn.executemany(
            "INSERT OR REPLACE INTO purged (id, seq) VALUES (?, ?)", [(i, seq) for i in entry["ids"]]
        )
    elif kind in ("manual_entered", "manual_approved", "manual_rejected"):
        problem = audit_prune.note_manual(expected_manual, seq, kind, entry)
        if problem is not None:
            _add(report, Finding(seq, problem))


def _check_punches(conn: sqlite3.Connection, report: VerifyReport) -> None:
    p = buffer_schema.punches
    columns = ", ".join(f"p.{c.name}" for c in buffer_outbox.INSERT_COLUMNS)
    report.punches_checked = int(conn.execute(f"SELECT count(*) FROM {p.name}").fetchone()[0])
    altered = conn.execute(
        f"SELECT c.seq, p.pk, p.id, p.device, p.user_id FROM chain_punch c JOIN {p.name} p ON p.id = c.id"
        f" WHERE pg_digest({columns}) != c.digest ORDER BY c.seq LIMIT {MAX_FINDINGS}"
    )
    for seq, pk, ident, device, user in altered:
        _add(
            report,
            Finding(
                seq,
                f"punch {ident} (row {pk}, terminal {device}, user {user}) was changed after it was stored: its row no longer matches the digest this entry recorded",
            ),
        )
    deleted = conn.execute(
        f"SELECT c.seq, c.id FROM chain_punch c LEFT JOIN {p.name} p ON p.id = c.id"
        " LEFT JOIN purged g ON g.id = c.id"
        f" WHERE p.id IS NULL AND (g.id IS NULL OR g.seq < c.seq) ORDER BY c.seq LIMIT {MAX_FINDINGS}"
    )
    for seq, ident in deleted:
        _add(
            report,
            Finding(
                seq,
                f"punch {ident} was deleted: it is not in the buffer and no purge entry signed its deletion off",
            ),
        )
    last_seq = report.last.seq + 1 if report.last else 1
    unrecorded = conn.execute(
        f"SELECT p.pk, p.id, p.device, p.user_id FROM {p.name} p LEFT JOIN chain_punch c ON c.id = p.id"
        f" WHERE c.id IS NULL ORDER BY p.pk LIMIT {MAX_FINDINGS}"
    )
    for pk, ident, device, user in unrecorded:
        _add(
            report,
            Finding(
                last_seq,
                f"punch {ident} (row {pk}, terminal {device}, user {user}) is in the buffer but in no entry of the chain (added by hand?)",
            ),
        )


def _check_manual(
    conn: sqlite3.Connection, report: VerifyReport, expected: dict[str, dict[str, Any]]
) -> None:
    m = buffer_schema.manual_punches
    rows = {
        row[0]: dict(zip(manual.COLUMNS, row, strict=True))
        for row in conn.execute(f"SELECT {', '.join(manual.COLUMNS)} FROM {m.name}")
    }
    report.manual_checked = len(rows)
    end = report.last.seq + 1 if report.last else 1
    for entry_id, wanted in expected.items():
        seq = wanted.pop("_seq")
        row = rows.pop(entry_id, None)
        if row is None:
            _add(report, Finding(seq, f"make-up punch {entry_id} was deleted from the buffer"))
            continue
        changed = sorted(key for key, value in wanted.items() if row.get(key) != value)
        if changed:
            _add(
                report,
                Finding(
                    seq, f"make-up punch {entry_id} was changed after this entry: {', '.join(changed)} differ"
                ),
            )
    for entry_id in rows:
        _add(
            report,
            Finding(
                end,
                f"make-up punch {entry_id} is in the buffer but in no entry of the chain (added by hand?)",
            ),
        )


def _check_head(conn: sqlite3.Connection, report: VerifyReport, head: dict[str, Any]) -> None:
    report.head_checked = head
    seq, digest = head.get("seq"), head.get("hash")
    if not isinstance(seq, int) or not isinstance(digest, str):
        raise ValueError("the published head needs an integer seq and a hash")
    identity = conn.execute(
        f"SELECT {buffer_schema.identity.c.gateway_id} FROM {buffer_schema.identity.name}"
    ).fetchone()
    gateway = head.get("gateway")
    if gateway and identity is not None and identity[0] not in (None, gateway):
        _add(
            report,
            Finding(1, f"published head is gateway {gateway!r}'s, this buffer belongs to {identity[0]!r}"),
        )
        return
    last = report.last.seq if report.last else 0
    anchor = conn.execute(audit._ANCHOR_SQL).fetchone()
    if anchor is not None and seq <= int(anchor[0]):
        if seq == int(anchor[0]) and digest != str(anchor[1]):
            _add(
                report,
                Finding(
                    seq + 1,
                    f"published head's hash for entry #{seq} differs from the anchor's: the chain was rewritten at or before #{seq}",
                ),
            )
        elif seq < int(anchor[0]):
            seed = audit_prune.anchor_checkpoint(conn, int(anchor[0]))
            report.head_pruned = int(seed.get("seq", 0)) if seed else int(anchor[0]) + 1
        return
    if seq > last:
        _add(
            report,
            Finding(
                last + 1,
                f"published head is entry #{seq}, but the chain ends at #{last}: entries #{last + 1}..#{seq} were removed (the chain was truncated)",
            ),
        )
        return
    row = conn.execute(
        f"SELECT {audit._AC.hash} FROM {audit._A.name} WHERE {audit._AC.seq} = ?", (seq,)
    ).fetchone()
    if row is None:
        _add(report, Finding(seq, f"published head is entry #{seq}, which the chain no longer holds"))
    elif row[0] != digest:
        _add(
            report,
            Finding(
                seq,
                f"published head's hash for entry #{seq} differs from the chain's: the chain was rewritten at or before #{seq} (a forgery, or another buffer)",
            ),
        )


def _add(report: VerifyReport, finding: Finding) -> None:
    if len(report.findings) < MAX_FINDINGS * 4:
        report.findings.append(finding)


def read_head_file(path: Path) -> dict[str, Any]:
    """A head saved from `{base}/audit` (or printed by `punchgate audit head`)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("seq"), int)
        or not isinstance(value.get("hash"), str)
    ):
        raise ValueError(
            f"{path}: not an audit head (a JSON object with seq and hash, as published on {{base}}/audit)"
        )
    return value
