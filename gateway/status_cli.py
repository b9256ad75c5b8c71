"""`punchgate status`: the running daemon's health, root cause first; exit 1 when anything is unhealthy.

Terminals worst first; each active fault set shows its root cause (punchgate.gateway.console.
health_view) with its detail, since when, and what to do (docs/health.md), the other codes after
it. From `WIDE` columns on, terminals are a table; narrower (80 columns), a short block each,
so nothing is cut to "termin…".
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from punchgate.gateway.console.health_view import (
    FaultView,
    TerminalView,
    drift_text,
    fill_text,
    root_cause_first,
    short_duration,
    terminal_views,
)

STATE_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}
STATE_MARK = {"online": "●", "degraded": "▲", "offline": "✖"}  # state is never colour alone
WIDE = 120  # columns from which terminals are a table; narrower, a block each (80 columns fit)


def fetch_status(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(base_url.rstrip("/") + "/api/devices", timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def is_healthy(status: dict[str, Any]) -> bool:
    """Healthy: the daemon's own verdict is good, no gateway fault, every terminal online."""
    gateway = status["gateway"]
    return (
        gateway.get("healthy", True)
        and not gateway["faults"]
        and gateway["broker_connected"]
        and all(d["state"] == "online" for d in status["devices"])
    )


def _when(value: dt.datetime | None, *, date: bool = True) -> str:
    """A time in this machine's zone (the gateway's; the header names it): `11-30 19:35:53`."""
    if value is None:
        return "never"
    return value.astimezone().strftime("%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _since(fault: FaultView) -> str:
    if fault.since is None:
        return ""
    age = (dt.datetime.now(dt.UTC) - fault.since).total_seconds()
    return f"since {_when(fault.since)} ({short_duration(age)})"


def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{STATE_MARK.get(state, '?')} {state}[/]"


def _fault_lines(faults: list[FaultView], *, advice: bool = True) -> list[str]:
    """The root cause with its detail, since and what to do; the others by code."""
    if not faults:
        return []
    root = faults[0]
    lines = [f"[bold]{escape(root.code)}[/]: {escape(root.detail or root.summary)} [dim]{_since(root)}[/]"]
    if advice and root.what_to_do:
        lines.append(f"[cyan]→ {escape(root.what_to_do)}[/]")
    if len(faults) > 1:
        lines.append("also: " + ", ".join(escape(f.code) for f in faults[1:]))
    return lines


def _facts(view: TerminalView) -> str:
    return (
        f"last punch {_when(view.last_punch)} · contact {_when(view.last_contact)} · "
        f"drift {drift_text(view.drift_seconds)} · {fill_text(view)} · pending {view.pending}"
    )


def _render_wide(views: list[TerminalView], console: Console, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in (
        "terminal",
        "state",
        "cause first",
        "last contact",
        "last punch",
        "drift",
        "records",
        "pending",
    ):
        table.add_column(column, overflow="fold")
    for view in views:
        table.add_row(
            escape(view.name),
            _state(view.state),
            "\n".join(_fault_lines(view.faults)) or "—",
            _when(view.last_contact),
            _when(view.last_punch),
            drift_text(view.drift_seconds),
            fill_text(view),
            str(view.pending),
        )
    console.print(table)


def _render_compact(views: list[TerminalView], console: Console, title: str) -> None:
    """One block per terminal: a state line, then the root cause and what to do, then the facts."""
    console.print(f"[bold]{escape(title)}[/]")
    for view in views:
        console.print(f"{_state(view.state)}  [bold]{escape(view.name)}[/]")
        for line in [*_fault_lines(view.faults), escape(_facts(view))]:
            console.print(Padding(line, (0, 0, 0, 2), expand=False))


def render(status: dict[str, Any], console: Console) -> None:
    """Terminals worst first, each with its root cause and what to do; then the gateway."""
    gateway = status["gateway"]
    views = terminal_views(status)
    zone = dt.datetime.now().astimezone().strftime("%Z, UTC%z")
    title = f"punchgate {gateway['gateway_id']} — terminals (times {zone})"
    if console.width >= WIDE:
        _render_wide(views, console, title)
    else:
        _render_compact(views, console, title)
    _render_gateway(status, console)


def _render_gateway(status: dict[str, Any], console: Console) -> None:
    gateway = status["gateway"]
    broker = "[green]connected[/]" if gateway["broker_connected"] else "[red]NOT connected[/]"
    age = gateway["oldest_pending_age_seconds"]
    unconfirmed = ""
    if gateway.get("delivery") == "central":
        oldest = gateway.get("oldest_unconfirmed_age_seconds")
        unconfirmed = f" · unconfirmed by central {gateway.get('unconfirmed', 0)}" + (
            f" (oldest {oldest:.0f} s)" if oldest else ""
        )
    console.print(
        f"gateway: broker {broker} · pending {gateway['pending']}"
        + (f" (oldest {age:.0f} s)" if age else "")
        + unconfirmed
    )
    faults = root_cause_first(list(gateway["faults"]))
    if faults:
        console.print("gateway faults:")
        for line in _fault_lines(faults):
            console.print(Padding(line, (0, 0, 0, 2), expand=False))
    else:
        console.print("gateway faults: none")
    synced = gateway.get("clock_synchronised")
    clock = {True: "[green]synchronised[/]", False: "[red]NOT synchronised[/]"}.get(
        synced, "[yellow]unknown[/]"
    )
    console.print(f"gateway clock: {clock} ({gateway.get('clock_sync_source', '?')})")


def unreachable_message(base_url: str, exc: BaseException) -> str:
    """One line for a daemon that does not answer: connection refused, timeout, unknown host."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    refused = isinstance(reason, ConnectionRefusedError)
    why = "" if refused else f" ({getattr(reason, 'strerror', None) or reason})"
    return f"no punchgate is answering at {base_url}{why} — is it running? (--config/--url)"


def show_status(base_url: str, *, as_json: bool = False) -> int:
    console = Console()
    if urlsplit(base_url).scheme not in ("http", "https"):
        console.print(
            f"[red]{escape(base_url)} is not a URL such as http://127.0.0.1:9108 (--url)[/]", soft_wrap=True
        )
        return 2
    try:
        status = fetch_status(base_url)
    except urllib.error.HTTPError as exc:  # e.g. 403: the URL's host is not one the daemon answers to
        if exc.headers.get_content_type() in ("text/plain", "application/json"):
            reason = " ".join(exc.read().decode(errors="replace").split())[:300]
        else:  # a web page: not punchgate's API answering
            reason = f"{exc.reason} (not punchgate's API? check --config/--url)"
        console.print(
            f"[red]the punchgate daemon at {escape(base_url)} refused: {exc.code} {escape(reason)}[/]",
            soft_wrap=True,
        )
        return 2
    except json.JSONDecodeError as exc:  # a ValueError too: something else answers there
        message = f"something at {base_url} answered, but not as punchgate does ({exc}); check --config/--url"
        console.print(f"[red]{escape(message)}[/]", soft_wrap=True)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[red]{escape(unreachable_message(base_url, exc))}[/]", soft_wrap=True)
        return 2
    except ValueError as exc:  # a URL urllib cannot use
        console.print(f"[red]{escape(base_url)}: {escape(str(exc))} (--url)[/]", soft_wrap=True)
        return 2
    if as_json:
        console.print_json(json.dumps(status))
    else:
        render(status, console)
    return 0 if is_healthy(status) else 1
