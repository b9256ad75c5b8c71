"""What the buffer stores for a request: its row and `command_accepted` entry, and the `command_refused` and
`command_done` audit entries."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from punchgate.gateway.commands.intake import Accepted, Rejection, masked
from punchgate.gateway.commands.open_request import OpenRequest
from punchgate.sync.command_contract import Status
from punchgate.sync.command_store import NewRequest
from punchgate.sync.contract import utc_iso

AUDIT_RESULT_BYTES = 2048  # results up to this size go into the audit entry; bigger ones are summarised


def accepted_rows(outcome: Accepted, now: float) -> tuple[NewRequest, dict[str, Any]]:
    """The row and the `command_accepted` audit entry of an accepted request."""
    new = NewRequest(
        id=outcome.id,
        command=outcome.request.command,
        requester=outcome.request.requester,
        request=outcome.document,
        reply_topic=outcome.reply_topic,
        correlation=outcome.correlation,
        received_at=now,
        expires_at=outcome.expires_at,
        targets=outcome.targets,
    )
    entry = {
        "id": outcome.id,
        "command": outcome.request.command,
        "requester": outcome.request.requester,
        "terminals": [t for t in outcome.targets if t],
        "args": masked(outcome.document).get("args", {}),
        "expires_at": utc_iso(dt.datetime.fromtimestamp(outcome.expires_at, dt.UTC)),
    }
    return new, entry


def refused_entry(rejection: Rejection) -> dict[str, Any]:
    """The `command_refused` audit entry of a readable request that was refused."""
    return {
        "id": rejection.request_id,
        "command": rejection.command,
        "requester": rejection.requester,
        "code": rejection.code,
        "reason": rejection.message,
    }


def done_entry(
    entry: OpenRequest,
    target: str,
    shown: dict[str, Any],
    status: Status,
    *,
    result: dict[str, Any] | None,
    error: tuple[str, str] | None,
) -> dict[str, Any]:
    """The `command_done` audit entry of a target's final answer; `shown` is the request, masked.

    A result bigger than `AUDIT_RESULT_BYTES` is summarised by its size.
    """
    audit: dict[str, Any] = {
        "id": entry.id,
        "command": entry.request.command,
        "requester": entry.request.requester,
        "terminal": target or None,
        "args": shown.get("args", {}),
        "status": status,
        "error": None if error is None else {"code": error[0], "message": error[1]},
    }
    text = json.dumps(result, separators=(",", ":"))
    audit["result"] = result if len(text) <= AUDIT_RESULT_BYTES else {"bytes": len(text), "kept": False}
    return audit
