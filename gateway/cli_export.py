"""`punchgate export`: the punches the buffer holds, as CSV or XLSX for payroll (docs/export.md).

Reads the buffer file read-only, so it runs while the daemon does. Exit codes: 0 written,
1 nothing written (bad range, unknown terminal, unwritable target, unreadable buffer: the
message names which), 2 bad usage or config.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from punchgate.gateway.cli_common import buffer_path, config_or_buffer_options, settings_unless_buffer

if TYPE_CHECKING:
    from punchgate.sync.export import ExportQuery, Progress


@click.command("export")
@click.option(
    "--from", "start", required=True, help="first day (2026-03-01) or local time (2026-03-01T06:00)"
)
@click.option(
    "--to", "end", required=True, help="last day, included (2026-03-31), or a local time (excluded)"
)
@click.option("--device", "-d", "devices", multiple=True, help="only this terminal (repeatable)")
@click.option("--user", "-u", "users", multiple=True, help="only this user id (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="file to write (default: punches-FROM-TO.FORMAT)",
)
@config_or_buffer_options
def export(
    start: str,
    end: str,
    devices: tuple[str, ...],
    users: tuple[str, ...],
    fmt: str,
    out: Path | None,
    config: Path | None,
    buffer: Path | None,
) -> None:
    """Export punches between two local times, per terminal, with names, make-up details and flags.

    CSV is UTF-8 with a byte order mark and ISO 8601 times; XLSX has a summary sheet (per user
    and day: first in, last out, count) and a sheet per terminal.
    """
    from punchgate.sync.export import ExportError, ExportQuery, export, parse_bound

    known: list[str] = []
    retention: float | None = None
    settings = settings_unless_buffer(config, buffer)
    if settings is not None:
        known = [t.name for t in settings.terminals] + [n for n in [settings.manual.virtual_terminal] if n]
        retention = settings.buffer.retention_days
    buffer = buffer_path(settings, buffer)
    try:
        query = ExportQuery(parse_bound(start, end=False), parse_bound(end, end=True), devices, users)
    except ExportError as exc:
        click.echo(f"cannot export: {exc}", err=True)
        sys.exit(1)
    target = out or Path(f"punches-{start}-{end}.{fmt}".replace(":", ""))
    progress, finish = _progress(buffer, query)
    try:
        result = export(
            buffer, query, target, "xlsx" if fmt == "xlsx" else "csv", known_devices=known, progress=progress
        )
    except ExportError as exc:
        finish()
        click.echo(f"cannot export: {exc}", err=True)
        sys.exit(1)
    finish()
    _warn_if_purged(buffer, query, retention)
    sheets = f", {len(result.devices)} terminal sheets and a summary" if fmt == "xlsx" else ""
    click.echo(f"{result.rows} punches written to {target}{sheets}")


def _progress(buffer: Path, query: ExportQuery) -> tuple[Progress | None, Callable[[], None]]:
    """A progress bar on a terminal (stderr is a TTY); nothing otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from rich.progress import Progress as Bar

    from punchgate.sync.export import connect, count

    try:
        conn = connect(buffer)
        try:
            total = count(conn, query)
        finally:
            conn.close()
    except Exception:
        return None, lambda: None
    bar = Bar(transient=True)
    task = bar.add_task("exporting", total=total)
    bar.start()
    return (lambda done: bar.update(task, completed=done)), bar.stop


def _warn_if_purged(buffer: Path, query: ExportQuery, retention: float | None) -> None:
    """The range starts before the oldest punch held: payroll should know older ones are gone."""
    import datetime as dt

    from punchgate.sync.export import connect, held_since

    try:
        conn = connect(buffer)
        try:
            oldest = held_since(conn)
        finally:
            conn.close()
    except Exception:
        return
    if oldest is not None and query.start < oldest - dt.timedelta(days=1):
        kept = f" (the buffer keeps delivered punches {retention:g} days)" if retention else ""
        click.echo(
            f"note: the buffer's oldest punch is from {oldest.isoformat()} UTC; earlier ones are not in the export{kept}",
            err=True,
        )
