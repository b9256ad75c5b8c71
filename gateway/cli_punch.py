"""`punchgate punch add|list|show|approve|reject`: make-up punches through the running daemon.

Each command calls the daemon's loopback API (gateway/manual_api.py) with its token, like
`punchgate replay`: the daemon owns the buffer, checks the rules in the transaction that
stores the entry, and sends an approved punch on. Needs the API token: run as the punchgate
user or root. Exit codes: 0 done, 1 refused (the daemon says why), 2 cannot reach the daemon
or read its token, or bad usage. See docs/manual-punches.md.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


def _api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--config, --url and --token-file, as `punchgate replay` takes them."""
    command = click.option(
        "--token-file",
        type=click.Path(path_type=Path),
        default=None,
        help="the daemon's API token (default from config, or /var/lib/punchgate/api/token)",
    )(command)
    command = click.option(
        "--url", default=None, help="API base URL (default from config or 127.0.0.1:9108)"
    )(command)
    return click.option(
        "--config",
        "-c",
        "config",
        type=click.Path(path_type=Path),
        help="read the API address and token file here",
    )(command)


def call(
    method: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    config: Path | None,
    url: str | None,
    token_file: Path | None,
) -> Any:
    """One API call; the JSON answer, or exit 1 (refused, with the daemon's sentence) / 2."""
    from punchgate.gateway.cli import _api_token, _api_url, _load_or_exit

    settings = _load_or_exit(config, check_files=False) if config else None
    base = (url or _api_url(settings)).rstrip("/")
    token = _api_token(settings, token_file)
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        click.echo(f"refused: {exc.read().decode(errors='replace').strip()}", err=True)
        sys.exit(EXIT_REFUSED)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"cannot reach the punchgate daemon at {base}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)


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
@_api_options
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
    entry = call("POST", "/api/manual", body, config=config, url=url, token_file=token_file)
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
@_api_options
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
    entries = call("GET", path, None, config=config, url=url, token_file=token_file)["entries"]
    if as_json:
        click.echo(json.dumps(entries, indent=1, ensure_ascii=False))
        return
    for entry in entries:
        click.echo(describe(entry))
    if not entries:
        click.echo("no make-up punches" + (f" {status}" if status else ""))


@punch.command("show")
@click.argument("entry_id")
@_api_options
def show(entry_id: str, config: Path | None, url: str | None, token_file: Path | None) -> None:
    """Show one make-up punch."""
    path = f"/api/manual/{urllib.parse.quote(entry_id, safe='')}"
    click.echo(describe(call("GET", path, None, config=config, url=url, token_file=token_file)))


def _decide(action: str, entry_id: str, by: str, note: str | None, **api: Any) -> dict[str, Any]:
    path = f"/api/manual/{urllib.parse.quote(entry_id, safe='')}/{action}"
    entry: dict[str, Any] = call("POST", path, {"by": by, "note": note}, **api)
    return entry


@punch.command("approve")
@click.argument("entry_id")
@click.option("--by", required=True, help="your name (not the person who entered it)")
@click.option("--note", default=None, help="a remark kept with the decision")
@_api_options
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
@_api_options
def reject(
    entry_id: str, by: str, note: str, config: Path | None, url: str | None, token_file: Path | None
) -> None:
    """Reject a pending make-up punch: it is kept on record and never sent."""
    entry = _decide("reject", entry_id, by, note, config=config, url=url, token_file=token_file)
    click.echo(describe(entry))
