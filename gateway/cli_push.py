"""`punchgate push-command send|list DEVICE …`: commands for push terminals through the daemon.

A push terminal cannot be called; it asks for commands in its heartbeat. So `send` queues the
command in the running daemon (its loopback API, gateway/push_commands_api.py, with the API
token, like `punchgate replay`) and the terminal gets it at its next heartbeat, or when it is
back. `--wait` waits for the result. `list` shows a terminal's queue and recent results. Exit
codes: 0 queued (with --wait: done), 1 refused by the daemon, or the command failed or expired,
2 cannot reach the daemon or read its token, or bad usage, 3 --wait ran out before the result.
See docs/zk-push.md, "Commands".
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import click

from punchgate.drivers.zk_push import commands
from punchgate.gateway.cli_common import api_options, call_api

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STILL_WAITING = 3
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
COMMANDS = ("info", "check", "reboot", "set-time", "user-update", "user-delete")


def _seconds(value: str) -> float:
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 90s, 30m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def describe(entry: dict[str, Any]) -> str:
    number = entry["id"].rpartition("/")[2]
    line = f"{number:>5}  {entry['status']:<8} {entry['command']}".replace("\t", " ")
    if entry["status"] in ("queued", "sent"):
        line += f"  (sent {entry['sends']}x, expires {entry['expires_at']})"
    elif entry["status"] == "expired":
        line += f"  ({entry['meaning']}, at {entry['finished_at']})"
    else:
        line += f"  -> Return={entry['returned']}: {entry['meaning']} ({entry['finished_at']})"
    if entry.get("late_result"):
        late = entry["late_result"]
        line += f"  [result after expiry: Return={late['returned']}: {late['meaning']}]"
    return line


def build_command(
    command: str,
    pin: str | None,
    *,
    name: str | None,
    privilege: str | None,
    card: int | None,
    password: str | None,
    at: str | None,
) -> str:
    """The command text for `send`; click.UsageError for a missing or extra argument."""
    needs_pin = command in ("user-update", "user-delete")
    if needs_pin and not pin:
        raise click.UsageError(f"{command} needs the user's PIN: send DEVICE {command} PIN")
    if not needs_pin and pin:
        raise click.UsageError(f"{command} takes no PIN")
    user_options = any(v is not None for v in (name, privilege, card, password))
    if user_options and command != "user-update":
        raise click.UsageError("--name, --privilege, --card and --password go with user-update")
    if at is not None and command != "set-time":
        raise click.UsageError("--time goes with set-time")
    assert pin is not None or not needs_pin
    try:
        if command == "info":
            return commands.info()
        if command == "check":
            return commands.check()
        if command == "reboot":
            return commands.reboot()
        if command == "set-time":
            return commands.set_time(_local_time(at) if at else None)
        if command == "user-delete":
            return commands.delete_user(pin or "")
        return commands.update_user(
            pin or "",
            name=name,
            privilege=None if privilege is None else commands.PRIVILEGES[privilege],
            card=card,
            password=password,
        )
    except commands.CommandTextError as exc:
        raise click.UsageError(str(exc)) from None


def _local_time(value: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not YYYY-MM-DD HH:MM:SS", param_hint="--time") from None
    if when.tzinfo is not None:
        raise click.BadParameter("give the terminal's local time, without an offset", param_hint="--time")
    return when


@click.group("push-command")
def push_command() -> None:
    """Commands for push terminals (zk-push): queued in the daemon, run at the terminal's next heartbeat."""


@push_command.command("send")
@click.argument("device")
@click.argument("command", type=click.Choice(COMMANDS))
@click.argument("pin", required=False)
@click.option("--name", default=None, help="user-update: the name the terminal shows")
@click.option("--privilege", type=click.Choice(sorted(commands.PRIVILEGES)), default=None, help="user-update")
@click.option(
    "--card", type=click.IntRange(0, 0xFFFFFFFF), default=None, help="user-update: card number (0: none)"
)
@click.option("--password", default=None, help="user-update: keypad password, up to 8 digits")
@click.option(
    "--time",
    "at",
    default=None,
    help="set-time: the terminal-local time YYYY-MM-DD HH:MM:SS (default: the gateway's clock when it is sent)",
)
@click.option(
    "--expires-in",
    default="1h",
    show_default=True,
    help="give up if the terminal has not run it by then (90s, 30m, 2h, 1d)",
)
@click.option("--wait", "wait", type=float, default=None, help="wait this many seconds for the result")
@click.option("--json", "as_json", is_flag=True, help="print the command as JSON")
@api_options
def send(
    device: str,
    command: str,
    pin: str | None,
    name: str | None,
    privilege: str | None,
    card: int | None,
    password: str | None,
    at: str | None,
    expires_in: str,
    wait: float | None,
    as_json: bool,
    config: Path | None,
    url: str | None,
    token_file: Path | None,
) -> None:
    """Queue COMMAND for the push terminal DEVICE: info, check (upload again), reboot, set-time,
    user-update PIN [--name …], user-delete PIN."""
    text = build_command(command, pin, name=name, privilege=privilege, card=card, password=password, at=at)
    api: dict[str, Any] = {"config": config, "url": url, "token_file": token_file}
    base = f"/api/push-commands/{urllib.parse.quote(device, safe='')}"
    entry: dict[str, Any] = call_api(
        "POST", base, {"command": text, "expires_in": _seconds(expires_in)}, **api
    )
    if wait is not None:
        number = entry["id"].rpartition("/")[2]
        deadline = time.monotonic() + wait
        while entry["status"] in ("queued", "sent") and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            entry = call_api("GET", f"{base}/{number}", None, **api)
    if as_json:
        click.echo(json.dumps(entry, indent=1, ensure_ascii=False))
    else:
        click.echo(describe(entry))
        for key, value in entry.get("details", {}).items():
            click.echo(f"        {key}={value}")
    if wait is None:
        return
    if entry["status"] in ("queued", "sent"):
        if not as_json:
            click.echo(f"no result within {wait:g} s; it stays queued: punchgate push-command list {device}")
        sys.exit(EXIT_STILL_WAITING)
    if entry["status"] != "ok":
        sys.exit(EXIT_FAILED)


@push_command.command("list")
@click.argument("device")
@click.option("--open", "only_open", is_flag=True, help="only the commands still waiting")
@click.option("--json", "as_json", is_flag=True, help="print the commands as JSON")
@api_options
def list_commands(
    device: str, only_open: bool, as_json: bool, config: Path | None, url: str | None, token_file: Path | None
) -> None:
    """DEVICE's commands, oldest first: waiting ones, and the recent results."""
    path = f"/api/push-commands/{urllib.parse.quote(device, safe='')}" + ("?open=1" if only_open else "")
    entries = call_api("GET", path, None, config=config, url=url, token_file=token_file)["commands"]
    if as_json:
        click.echo(json.dumps(entries, indent=1, ensure_ascii=False))
        return
    for entry in entries:
        click.echo(describe(entry))
    if not entries:
        click.echo(f"no commands for {device}" + (" waiting" if only_open else ""))
