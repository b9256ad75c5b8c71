"""Remote commands from the console: an admin's buttons on a terminal's page, and the outcome.

The console is one more requester of the gateway's command service
(`punchgate.gateway.commands.service.CommandService.submit`): a button builds the same request
an MQTT requester would send, and the service reads it with the same checks, the same
`[commands] allow` list, the same audit entries (`command_accepted`, `command_done`,
`command_refused`) and the same idempotency by request id. The requester is `console:NAME`,
the signed-in account, never a form field. Each button's form carries a request id made when
the page was drawn, so a form sent twice (a double click, a resent POST) runs once and shows the
first run's outcome. The answers are published too, below the gateway's response topic
(`{base}/commands/response/console`), so central sees what was done on site.

Only the commands of `OFFERED` that the allow list names and the terminal can run are shown
(`offered`); the users.upsert/delete ones need structured arguments and stay with MQTT and
`punchgate command`. A destructive command (the catalogue's `destructive`) is sent only from a
confirmation page; `log.clear` there asks for the terminal's serial number, which the service
checks against what the terminal reports (`serial_mismatch`). The outcome page
(/commands/ID) reads the buffer's stored request and refreshes its fragment until every target
has a final answer.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from punchgate.gateway.commands.catalogue import CATALOGUE, CommandSpec
from punchgate.gateway.commands.routing import cannot_run, terminal_kinds
from punchgate.gateway.commands.service import command_service
from punchgate.gateway.console.health_view import zone
from punchgate.gateway.console.render import Page, redirect, render
from punchgate.gateway.console.state import Console
from punchgate.gateway.push_commands import push_command_queue
from punchgate.sync.command_contract import REQUEST_ID_PATTERN
from punchgate.sync.command_store import StoredRequest

log = structlog.get_logger(__name__)

# What the console offers, in the order of the buttons: the commands whose arguments fit a form.
OFFERED = (
    "device.info",
    "device.read_now",
    "users.list",
    "device.set_time",
    "punches.resend",
    "device.enable",
    "device.disable",
    "device.restart",
    "log.clear",
)
CONSOLE_TOPIC = "console"  # the answers go below the default response topic
FRAGMENT_SECONDS = 2
FINAL = ("ok", "error", "expired")


def new_request_id() -> str:
    return "console-" + secrets.token_hex(8)


def offered(console: Console, name: str) -> list[CommandSpec]:
    """The commands an admin may send to terminal `name` from the console: offered here, in the
    allow list, and runnable on it (its kind; its driver's abilities; a running push queue)."""
    app = console.gateway
    service = command_service(app) if app is not None else None
    if app is None or service is None:
        return []
    kind = terminal_kinds(app).get(name)
    if kind is None or kind == "disabled":
        return []
    queue = push_command_queue(app) if kind == "push" else None
    shown = []
    for command in OFFERED:
        spec = CATALOGUE[command]
        if command not in service.settings.allow:
            continue
        if kind == "push":
            runnable = spec.scope == "buffer" or spec.push or (spec.queued and queue is not None)
        else:
            runnable = spec.scope == "buffer" or cannot_run(app.workers[name], spec) is None
        if runnable:
            shown.append(spec)
    return shown


@dataclass(frozen=True, slots=True)
class Button:
    """One command's form on a terminal's page."""

    spec: CommandSpec
    request_id: str


def buttons(console: Console, page: Page, name: str) -> list[Button]:
    """The terminal page's buttons: none unless the account may send commands."""
    if page.account is None or not page.account.may("commands"):
        return []
    return [Button(spec, new_request_id()) for spec in offered(console, name)]


def commands_enabled(console: Console) -> bool:
    return console.gateway is not None and command_service(console.gateway) is not None


# --- the arguments a form gives -------------------------------------------------------------------
def _site_instant(text: str, tz_name: str) -> str:
    """A datetime-local value (the site's wall time) as an ISO 8601 instant with its offset."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz_name))
    return value.isoformat()


def _args(command: str, form: Mapping[str, str], page: Page) -> dict[str, Any] | str:
    """The request's `args` from the form, or the sentence saying what is wrong with it."""
    if command == "device.set_time":
        text = form.get("time", "").strip()
        # Without an offset: the terminal's local time, as the contract reads it.
        return {"time": text} if text else {}
    if command == "punches.resend":
        args: dict[str, Any] = {}
        for field in ("from", "to"):
            text = form.get(field, "").strip()
            if not text:
                continue
            try:
                args[field] = _site_instant(text, page.tz_name)
            except ValueError:
                return page.words("cmd.bad_time", field=page.words(f"cmd.{field}"), value=text[:40])
        if "from" not in args:
            return page.words("cmd.from_required")
        return args
    if command == "log.clear":
        return {"serial": form.get("serial", "").strip()}
    return {}


# --- the routes ------------------------------------------------------------------------------------
async def command_post(
    console: Console, page: Page, request: web.Request, form: Mapping[str, str]
) -> web.StreamResponse:
    """POST /terminals/NAME/commands: a command for that terminal, through the command service."""
    assert console.gateway is not None and page.account is not None
    name = request.match_info["name"]
    command = form.get("command", "")
    service = command_service(console.gateway)

    async def show(template: str, status: int = 200, **values: Any) -> web.StreamResponse:
        return await console.blocking(lambda: render(console, page, template, status, name=name, **values))

    if service is None:
        return await show("error.html", 503, message=page.words("cmd.off"))
    if name not in terminal_kinds(console.gateway):
        return await show("error.html", 404, message=page.words("terminal.unknown", name=name))
    if command not in OFFERED:
        log.warning("console_command_refused", account=page.account.name, command=command[:60], terminal=name)
        return await show("error.html", 400, message=page.words("cmd.not_offered", command=command[:60]))
    spec = CATALOGUE[command]
    given = form.get("request_id", "")
    request_id = given if re.fullmatch(REQUEST_ID_PATTERN, given) else new_request_id()
    args = _args(command, form, page)
    if isinstance(args, str):
        return await show("error.html", 400, message=args)
    if spec.destructive and form.get("confirmed") != "yes":
        # Nothing is sent yet: the confirmation page sends the same form again, confirmed.
        return await show("command_confirm.html", spec=spec, request_id=request_id, args=args)
    payload = {
        "schema": "punchgate.command",
        "version": 1,
        "id": request_id,
        "requester": f"console:{page.account.name}",
        "command": command,
        "terminals": [name],
        "args": args,
    }
    topic = f"{service.default_topic}/{CONSOLE_TOPIC}"
    rejection = await service.submit(json.dumps(payload).encode(), response_topic=topic)
    log.info(
        "console_command",
        account=page.account.name,
        id=request_id,
        command=command,
        terminal=name,
        refused=None if rejection is None else rejection.code,
    )
    if rejection is not None:
        status = 403 if rejection.code == "not_allowed" else 400
        return await show(
            "command.html",
            status,
            refusal=rejection,
            command=command,
            request_id=request_id,
            stored=None,
            terminals_named=[name],
        )
    return redirect("/commands/" + quote(request_id, safe=""))


def _outcome_values(console: Console, request_id: str) -> dict[str, Any]:
    assert console.gateway is not None and console.gateway.store is not None
    stored = console.gateway.store.command_get(request_id)
    return {
        "stored": stored,
        "request_id": request_id,
        "targets": [] if stored is None else _targets(stored),
        "final": stored is not None and all(t.status in FINAL for t in stored.targets.values()),
        "fragment_seconds": FRAGMENT_SECONDS,
        "refusal": None,
        "expires": None if stored is None else dt.datetime.fromtimestamp(stored.expires_at, dt.UTC),
        "received": None if stored is None else dt.datetime.fromtimestamp(stored.received_at, dt.UTC),
        "command": None if stored is None else stored.command,
        "terminals_named": [] if stored is None else [t for t in stored.targets if t],
    }


def _targets(stored: StoredRequest) -> list[dict[str, Any]]:
    """Each target's status, and from its final answer the error or the result's fields."""
    rows = []
    for target, state in stored.targets.items():
        answer = json.loads(state.response) if state.response else {}
        result = answer.get("result") or {}
        shown = {key: _shown(value) for key, value in result.items()}
        rows.append(
            {
                "name": target,
                "status": state.status,
                "error": answer.get("error"),
                # Scalars in a list of facts; lists and objects (users.list's users) as JSON blocks.
                "fields": [(key, text) for key, (text, block) in shown.items() if not block],
                "blocks": [(key, text) for key, (text, block) in shown.items() if block],
            }
        )
    return rows


def _shown(value: Any) -> tuple[str, bool]:
    """(text, whether it is a JSON block): a list or object (users.list's users) as JSON."""
    if isinstance(value, list):  # one item a line: a user list stays readable at a glance
        return "\n".join(json.dumps(item, ensure_ascii=False) for item in value), True
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, indent=1), True
    if value is None:
        return "—", False
    return (json.dumps(value) if isinstance(value, bool) else str(value)), False


def outcome_page(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    """GET /commands/ID: a request's outcome per terminal, from the buffer (any requester's)."""
    values = _outcome_values(console, request.match_info["request_id"])
    status = 200 if values["stored"] is not None else 404
    return render(console, page, "command.html", status, **values)


def outcome_fragment(console: Console, page: Page, request: web.Request) -> web.StreamResponse:
    """The outcome's live part, which static/refresh.js swaps in until every answer is final."""
    values = _outcome_values(console, request.match_info["request_id"])
    return render(console, page, "_command_outcome.html", **values)
