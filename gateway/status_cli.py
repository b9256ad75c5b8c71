"""`punchgate status`: the running daemon's health as a table; exit 1 when anything is unhealthy."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATE_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}


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


def _faults(faults: list[dict[str, Any]]) -> str:
    return "\n".join(f"{f['code']}: {f['detail']}" for f in faults) or "—"


def render(status: dict[str, Any], console: Console) -> None:
    gateway = status["gateway"]
    table = Table(title=f"punchgate {gateway['gateway_id']} — terminals", title_justify="left")
    for column in (
        "terminal",
        "state",
        "faults",
        "last contact",
        "last punch",
        "drift",
        "records/capacity",
        "pending",
    ):
        table.add_column(column)
    for device in status["devices"]:
        state = device["state"]
        drift = device["clock_drift_seconds"]
        table.add_row(
            device["device"],
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]",
            _faults(device["faults"]),
            str(device["last_contact"] or "never")[:19],
            str(device.get("last_punch_at") or "—")[:19],
            "—" if drift is None else f"{drift:+.0f} s",
            f"{device['record_count']}/{device['record_capacity']}" if device["record_capacity"] else "—",
            str(device["pending"]),
        )
    console.print(table)
    broker = "[green]connected[/]" if gateway["broker_connected"] else "[red]NOT connected[/]"
    age = gateway["oldest_pending_age_seconds"]
    console.print(
        f"gateway: broker {broker} · pending {gateway['pending']}"
        + (f" (oldest {age:.0f} s)" if age else "")
        + f" · faults: {_faults(gateway['faults'])}"
    )
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
