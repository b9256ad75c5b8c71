"""`punchgate punch add|list|show|approve|reject`: make-up punches through the running daemon.

Each command calls the daemon's loopback API (gateway/manual_api.py) with its token, like
`punchgate replay`: the daemon owns the buffer, checks the rules in the transaction that
stores the entry, and sends an approved punch on. Needs the API token: run as the punchgate
user or root. Exit codes: 0 done, 1 refused (the daemon says why), 2 cannot reach the daemon
or read its token, or bad usage. See docs/manual-punches.md.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import click

from punchgate.gateway.cli_common import api_options, call_api


def describe(entry: dict[str, Any]) -> str:
    decided = ""
    if entry["status"] != "pending":
        who = entry.get("decided_by") or "no approval required"
        decided = f" by {who} at {entry.get('decided_at')}"
        if entry.get("note"):
            decided += f" ({entry['note']})"
    return (
        f"{entry['entry_id']}  {entry['status']}{decided}\n"
        f"    terminal {entry['device']}, user {entry['user_id']}, {entry['local_time']} local, state {entry['state']}\n"
        f"    {entry['reason_code']}: {entry['reason']} (entered by {entry['entered_by']} at {entry['entered_at']})"
    )


@click.group("punch")
def punch() -> None:
    """Make-up punches: add one with a reason, list them, approve or reject (a different person)."""


@punch.command("add")
@click.option("--device", "-d", required=True, help="terminal name (or the site's virtual terminal)")
@click.option("--user", "-u", "user_id", required=True, help="the user's id on the terminal")
@click.option("--time", "-t", "local_time", required=True, help="terminal-local time, e.g. 2026-03-02T08:00")
@click.option("--state", "-s", required=True, help="check_in, check_out, break_out, ... or a raw code")
@click.option(
    "--reason-code", "-r", required=True, help="a category from [manual] reasons, e.g. forgot_to_punch"
)
@click.option("--reason", "-m", required=True, help="free text: what happened")
@click.option("--by", "entered_by", required=True, help="your name: who enters the make-up punch")
@api_options
def add(
    device: str,
    user_id: str,
    local_time: str,
    state: str,
    reason_code: str,
    reason: str,
    entered_by: str,
    config: Path | None,
    url: str | None,
    token_file: Path | None,
) -> None:
    """Enter a make-up punch; it waits for approval by someone else (unless the site needs none)."""
    body = {
        "device": device,
        "user_id": user_id,
        "local_time": local_time,
        "state": int(state) if state.isdigit() else state,
        "reason_code": reason_code,
        "reason": reason,
        "entered_by": entered_by,
    }
    entry = call_api("POST", "/api/manual", body, config=config, url=url, token_file=token_file)
    click.echo(describe(entry))
    if entry["status"] == "pending":
        click.echo(
            f"waiting for approval by someone other than {entry['entered_by']}: punchgate punch approve {entry['entry_id']} --by NAME"
        )
    else:
        click.echo(f"approved: sent as record {entry['punch_id']}")


@punch.command("list")
@click.option("--status", type=click.Choice(["pending", "approved", "rejected"]), default=None)
@click.option("--device", "-d", default=None, help="only this terminal's")
@click.option("--user", "-u", "user_id", default=None, help="only this user's")
@click.option("--json", "as_json", is_flag=True, help="print the entries as JSON")
@api_options
def list_entries(
    status: str | None,
    device: str | None,
    user_id: str | None,
    as_json: bool,
    config: Path | None,
    url: str | None,
    token_file: Path | None,
) -> None:
    """List make-up punches, newest first."""
    query = {k: v for k, v in (("status", status), ("device", device), ("user_id", user_id)) if v}
    path = "/api/manual" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    entries = call_api("GET", path, None, config=config, url=url, token_file=token_file)["entries"]
    if as_json:
        click.echo(json.dumps(entries, indent=1, ensure_ascii=False))
        return
    for entry in entries:
        click.echo(describe(entry))
    if not entries:
        click.echo("no make-up punches" + (f" {status}" if status else ""))


@punch.command("show")
@click.argument("entry_id")
@api_options
def show(entry_id: str, config: Path | None, url: str | None, token_file: Path | None) -> None:
    """Show one make-up punch."""
    path = f"/api/manual/{urllib.parse.quote(entry_id, safe='')}"
    click.echo(describe(call_api("GET", path, None, config=config, url=url, token_file=token_file)))


def _decide(action: str, entry_id: str, by: str, note: str | None, **api: Any) -> dict[str, Any]:
    path = f"/api/manual/{urllib.parse.quote(entry_id, safe='')}/{action}"
    entry: dict[str, Any] = call_api("POST", path, {"by": by, "note": note}, **api)
    return entry


@punch.command("approve")
@click.argument("entry_id")
@click.option("--by", required=True, help="your name (not the person who entered it)")
@click.option("--note", default=None, help="a remark kept with the decision")
@api_options
def approve(
    entry_id: str, by: str, note: str | None, config: Path | None, url: str | None, token_file: Path | None
) -> None:
    """Approve a pending make-up punch: it is stored and sent as a punch with source manual."""
    entry = _decide("approve", entry_id, by, note, config=config, url=url, token_file=token_file)
    click.echo(describe(entry))
    click.echo(f"approved: sent as record {entry['punch_id']}")


@punch.command("reject")
@click.argument("entry_id")
@click.option("--by", required=True, help="your name (not the person who entered it)")
@click.option("--note", required=True, help="why it is rejected")
@api_options
def reject(
    entry_id: str, by: str, note: str, config: Path | None, url: str | None, token_file: Path | None
) -> None:
    """Reject a pending make-up punch: it is kept on record and never sent."""
    entry = _decide("reject", entry_id, by, note, config=config, url=url, token_file=token_file)
    click.echo(describe(entry))
