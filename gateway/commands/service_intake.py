"""The command service's intake: requests read, accepted in one commit, or refused.

A refused request is answered `error` at once, counted and logged (and audited as
`command_refused` when it named an id); an accepted one is stored with its `command_accepted`
entry before it is answered `accepted`; a request id the buffer knows is answered from the
buffer, marked `repeat`, and never run again. Kept apart from `service.py`, which holds the
service's state, tasks and answers; these functions take the service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

import structlog

from punchgate.gateway.commands.audit_entries import accepted_rows, refused_entry
from punchgate.gateway.commands.intake import Accepted, Rejection, TerminalKind, read_request
from punchgate.gateway.commands.open_request import OpenRequest
from punchgate.gateway.commands.routing import terminal_kinds
from punchgate.sync.command_contract import Status
from punchgate.sync.command_contract import response_json as render
from punchgate.sync.command_store import NewRequest, StoredRequest
from punchgate.sync.contract import utc_iso
from punchgate.sync.forwarder import Incoming

if TYPE_CHECKING:
    from punchgate.gateway.commands.service import CommandService

# The service's logger: these lines are the service's, wherever the code sits.
log = structlog.get_logger("punchgate.gateway.commands.service")


def _read(
    service: CommandService, message: Incoming, kinds: dict[str, TerminalKind], now: float
) -> Accepted | Rejection:
    return read_request(
        message.payload,
        settings=service.settings,
        kinds=kinds,
        default_topic=service.default_topic,
        response_topic=message.response_topic,
        correlation=message.correlation_data,
        now=now,
    )


async def take(service: CommandService, messages: list[Incoming]) -> None:
    now = time.time()
    kinds = terminal_kinds(service.app)
    accepted: list[tuple[Accepted, NewRequest, dict[str, Any]]] = []
    for message in messages:
        outcome = _read(service, message, kinds, now)
        if isinstance(outcome, Rejection):
            await service._refuse(outcome, message)
        else:
            accepted.append((outcome, *accepted_rows(outcome, now)))
    if accepted:
        await _accept(service, accepted)


async def _accept(
    service: CommandService, accepted: list[tuple[Accepted, NewRequest, dict[str, Any]]]
) -> None:
    """Requests read and checked, stored in one commit; each opened, or answered as a repeat."""
    stored = await asyncio.to_thread(
        service.store.command_accept_many, [(new, entry) for _, new, entry in accepted]
    )
    for (outcome, _new, entry), existing in zip(accepted, stored, strict=True):
        if existing is not None:
            service.requests["repeat"] += 1
            log.info(
                "command_repeated",
                id=outcome.id,
                command=existing.command,
                requester=outcome.request.requester,
            )
            service._answer_repeat(existing, outcome.reply_topic, outcome.correlation)
        else:
            await service._open_request(outcome, entry)


async def take_one(service: CommandService, message: Incoming) -> Rejection | None:
    """One request from inside the gateway (the site console), taken as `take` takes a batch:
    the same checks, allow list, audit entries and idempotency by id. Returns its refusal (also
    answered, counted and audited as any other), or None once it is accepted or answered as a
    repeat: the buffer then holds it under its id."""
    now = time.time()
    outcome = _read(service, message, terminal_kinds(service.app), now)
    if isinstance(outcome, Rejection):
        return None if await service._refuse(outcome, message) else outcome
    await _accept(service, [(outcome, *accepted_rows(outcome, now))])
    return None


async def refuse(service: CommandService, rejection: Rejection, message: Incoming) -> bool:
    """A refused request, unless its id is known: that one is answered from the buffer
    whatever the repeat says (a retry from a newer requester, or after the allow list
    changed): never run again, never refused. True when it was answered as a repeat."""
    known = None
    if rejection.request_id is not None:
        known = await asyncio.to_thread(service.store.command_get, rejection.request_id)
    if known is None:
        await service._reject(rejection, message)
        return False
    service.requests["repeat"] += 1
    log.info("command_repeated", id=known.id, command=known.command, requester=rejection.requester)
    service._answer_repeat(known, rejection.reply_topic or service.default_topic, message.correlation_data)
    return True


async def open_request(service: CommandService, outcome: Accepted, entry: dict[str, Any]) -> None:
    """A request just stored: answer `accepted`, then send each target on its way."""
    service.requests["accepted"] += 1
    log.info(
        "command_received",
        id=outcome.id,
        command=outcome.request.command,
        requester=outcome.request.requester,
        terminals=entry["terminals"],
        args=entry["args"],
    )
    opened = OpenRequest(
        request=outcome.request,
        spec=outcome.spec,
        document=outcome.document,
        reply_topic=outcome.reply_topic,
        correlation=outcome.correlation,
        expires_at=outcome.expires_at,
        targets=dict.fromkeys(outcome.targets, "waiting"),
    )
    service._open[opened.id] = opened
    service._publish(
        opened.reply_topic,
        opened.correlation,
        render(
            gateway=service.gateway_id,
            request_id=opened.id,
            command=opened.request.command,
            terminal=None,
            status="accepted",
            result={"terminals": entry["terminals"], "expires_at": entry["expires_at"]},
        ),
    )
    for target in outcome.targets:
        await service._dispatch(opened, target)


async def reject(service: CommandService, rejection: Rejection, message: Incoming) -> None:
    service.requests["rejected"] += 1
    service.rejected[rejection.code] += 1
    log.warning(
        "command_rejected",
        code=rejection.code,
        reason=rejection.message,
        id=rejection.request_id,
        command=rejection.command,
        requester=rejection.requester,
        size=len(message.payload),
    )
    if rejection.request_id is not None:  # a readable request, refused: worth the audit trail
        entry = refused_entry(rejection)
        await asyncio.to_thread(service.store.audit_action, "command_refused", entry)
    service._publish(
        rejection.reply_topic or service.default_topic,
        message.correlation_data,
        render(
            gateway=service.gateway_id,
            request_id=rejection.request_id,
            command=rejection.command,
            terminal=None,
            status="error",
            error=(rejection.code, rejection.message),
        ),
    )


def answer_repeat(
    service: CommandService, stored: StoredRequest, topic: str, correlation: bytes | None
) -> None:
    for target, state in stored.targets.items():
        if state.response is not None:
            answer = json.loads(state.response)
            answer["repeat"] = True
            answer["at"] = utc_iso(dt.datetime.now(dt.UTC))
            payload = json.dumps(answer, separators=(",", ":")).encode()
        else:
            status: Status = "running" if state.status == "running" else "accepted"
            payload = render(
                gateway=service.gateway_id,
                request_id=stored.id,
                command=stored.command,
                terminal=target or None,
                status=status,
                repeat=True,
            )
        service._publish(topic, correlation, payload)
