"""`punchgate buffer check`: everything that can be said about the buffer without changing it.

The same judgements the daemon makes at start (`buffer_inspect`, `buffer_identity`), plus
SQLite's full `PRAGMA integrity_check` (quick_check's b-tree checks and every index against
its table), the punch counts, and who holds the buffer's lock. Read-only: the file is opened
with `mode=ro` and never migrated, claimed or written, so it can run beside the daemon. (A
read-only connection to a WAL database may create the `-shm`/`-wal` files if they are
missing; run as root, they are given the folder's owner, like everything else.)
"""

from __future__ import annotations

import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path

from punchgate.sync import buffer_identity, buffer_schema, migrations
from punchgate.sync.buffer_identity import CompanionError, Finding, Identity
from punchgate.sync.buffer_inspect import FileState, inspect_file
from punchgate.sync.buffer_paths import BufferPaths, lock_holder, match_owner

# integrity_check reports at most this many problems (SQLite's own default is 100).
_MAX_ERRORS = 100
_SHOWN = 20


@dataclass
class CheckReport:
    """What `check_buffer` found; `ok` when the daemon would start on it and SQLite finds no damage."""

    path: Path
    state: FileState
    holder: int | None = None
    findings: list[Finding] = field(default_factory=list)
    integrity: list[str] | None = None  # None: not run (no file, or not SQLite)
    schema_version: int | None = None
    pending: int | None = None
    delivered: int | None = None
    identity: Identity | None = None
    companion: Identity | None = None
    modes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.refuse for f in self.findings) and self.integrity in (None, ["ok"])

    def lines(self) -> list[str]:
        verdict = "OK" if self.ok else "DAMAGED: the daemon refuses to start on it"
        out = [f"buffer {self.path}: {verdict}"]
        out.append(f"  file: {self._file_line()}")
        out.append(
            "  in use: no"
            if self.holder is None
            else f"  in use: yes, by process {self.holder or '(unknown)'} (the daemon?)"
        )
        if self.integrity is not None:
            shown = self.integrity[:_SHOWN]
            more = f" (and {len(self.integrity) - _SHOWN} more)" if len(self.integrity) > _SHOWN else ""
            out.append(f"  integrity_check: {shown[0]}" if len(shown) == 1 else "  integrity_check:")
            if len(shown) > 1:
                out += [f"    {line}" for line in shown]
            if more:
                out.append(f"   {more}")
        if self.schema_version is not None:
            out.append(
                f"  schema: version {self.schema_version} (this punchgate: {migrations.LATEST_VERSION})"
            )
        if self.pending is not None:
            out.append(f"  punches: {self.pending} pending, {self.delivered} delivered")
        if self.identity is not None:
            out.append(f"  identity: {self.identity.describe()}")
        out.append(
            f"  companion: {self.companion.describe()}" if self.companion is not None else "  companion: none"
        )
        for finding in self.findings:
            label = "problem" if finding.refuse else "warning"
            out.append(f"  {label} ({finding.problem}): {finding.detail}")
        if not self.ok:
            out.append(
                "  next: stop the daemon and run `punchgate buffer recover` to salvage what is readable "
                "into a new file (the damaged one is kept aside)"
            )
        return out

    def _file_line(self) -> str:
        state = self.state
        if not state.exists:
            return "missing"
        pages = f", {state.size // state.page_size} pages of {state.page_size}" if state.page_size else ""
        modes = ", ".join(f"{name} {mode:04o}" for name, mode in self.modes.items())
        wal = f", WAL {state.wal_size} bytes" if state.wal_size else ""
        return f"{state.size} bytes{pages}{wal}; modes {modes}"


def check_buffer(path: Path, *, gateway_id: str | None = None) -> CheckReport:
    """Look at the buffer at `path` and say what is wrong with it (see `CheckReport.lines`)."""
    paths = BufferPaths(path)
    report = CheckReport(path, inspect_file(paths), holder=lock_holder(paths))
    report.modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths.family() if p.exists()}
    loose = [name for name, mode in report.modes.items() if mode & 0o077]
    if loose:
        report.findings.append(
            Finding(
                "permissions",
                f"{', '.join(loose)} can be read by other users (the daemon makes them 0600 at its next start)",
                refuse=False,
            )
        )
    try:
        report.companion = buffer_identity.read_companion(paths.companion)
    except CompanionError as exc:
        report.findings.append(Finding("companion_unreadable", str(exc), refuse=False))
    report.findings += buffer_identity.file_findings(paths, report.state, report.companion)
    if report.state.exists and report.state.problem is None:
        if report.companion is None and not any(f.problem == "companion_unreadable" for f in report.findings):
            report.findings.append(
                Finding(
                    "companion_missing",
                    f"{paths.companion.name} is missing (the daemon writes it anew at its next start)",
                    refuse=False,
                )
            )
        _check_contents(paths, report, gateway_id)
    elif not report.state.exists and not report.findings:
        report.findings.append(
            Finding("new", "no buffer yet: the daemon creates one at its first start", refuse=False)
        )
    return report


def _check_contents(paths: BufferPaths, report: CheckReport, gateway_id: str | None) -> None:
    created = [p for p in (paths.wal, paths.shm) if not p.exists()]
    conn = sqlite3.connect(f"{paths.db.as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        report.integrity = [str(row[0]) for row in conn.execute(f"PRAGMA integrity_check({_MAX_ERRORS})")]
    except sqlite3.DatabaseError as exc:
        report.integrity = [f"SQLite cannot read it: {exc}"]
    try:
        if report.integrity != ["ok"]:
            report.findings.append(
                Finding("corrupt", f"SQLite's integrity_check fails: {report.integrity[0]}", refuse=True)
            )
        _read_contents(conn, report, gateway_id, paths)
    finally:
        conn.close()
        for path in created:
            if path.exists():
                match_owner(path, paths.folder)


def _read_contents(
    conn: sqlite3.Connection, report: CheckReport, gateway_id: str | None, paths: BufferPaths
) -> None:
    t = buffer_schema.punches
    delivered_at = t.c.delivered_at.name
    try:
        report.schema_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        pending, total = conn.execute(
            f"SELECT total({delivered_at} IS NULL), count(*) FROM {t.name}"
        ).fetchone()
        report.pending, report.delivered = int(pending), int(total) - int(pending)
    except sqlite3.DatabaseError as exc:
        report.findings.append(Finding("corrupt", f"cannot count its punches: {exc}", refuse=True))
    if report.schema_version is None or report.schema_version < 3:
        report.findings.append(
            Finding(
                "no_identity_yet",
                "an older schema without an identity (added at the next start)",
                refuse=False,
            )
        )
        return
    i = buffer_schema.identity
    try:
        row = conn.execute(
            f"SELECT {i.c.gateway_id.name}, {i.c.created.name}, {i.c.stored.name} FROM {i.name}"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        report.findings.append(Finding("no_identity", f"cannot read its identity: {exc}", refuse=True))
        return
    if row is not None:
        report.identity = Identity(None if row[0] is None else str(row[0]), str(row[1]), int(row[2]))
    would_be = report.identity
    if would_be is not None and would_be.gateway_id is None and gateway_id is not None:
        would_be = Identity(gateway_id, would_be.created, would_be.stored)  # the daemon claims it
    report.findings += buffer_identity.identity_findings(
        would_be, report.companion, gateway_id, companion_name=paths.companion.name
    )
