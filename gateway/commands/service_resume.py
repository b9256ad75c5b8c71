"""The command service at start-up: what the buffer holds is resumed.

Open targets are queued again (a target that was running when the gateway died runs again if
it is safe to repeat; a restart or a clear is answered `interrupted` instead), and final
answers never acknowledged are published again. Kept apart from `service.py`, which holds the
service's state, tasks and answers; these functions take the service.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import TYPE_CHECKING

import structlog

from punchgate.gateway.commands.catalogue import CATALOGUE
from punchgate.gateway.commands.open_request import OpenRequest
from punchgate.sync.command_contract import parse_request
from punchgate.sync.command_store import StoredRequest

if TYPE_CHECKING:
    from punchgate.gateway.commands.service import CommandService

# The service's logger: these lines are the service's, wherever the code sits.
log = structlog.get_logger("punchgate.gateway.commands.service")


async def resume(service: CommandService) -> None:
    stored = await asyncio.to_thread(service.store.command_open)
    resumed = 0
    for request in stored:
        for target, state in request.targets.items():
            if state.final and not state.published and state.response is not None:
                service._publish(
                    request.reply_topic,
                    request.correlation,
                    state.response.encode(),
                    on_sent=functools.partial(service._acked.append, (request.id, target)),
                )
        if request.done_at is None:
            resumed += 1
            await service._reopen(request)
    if stored:
        log.info("commands_resumed", requests=resumed, answers_republished=len(stored) - resumed)


async def reopen(service: CommandService, stored: StoredRequest) -> None:
    try:
        request = parse_request(json.dumps(stored.request))
    except ValueError as exc:  # written by another release, say
        log.error("command_not_resumable", id=stored.id, error=str(exc))
        return
    spec = CATALOGUE[request.command]
    entry = OpenRequest(
        request=request,
        spec=spec,
        document=stored.request,
        reply_topic=stored.reply_topic,
        correlation=stored.correlation,
        expires_at=stored.expires_at,
        targets={target: state.status for target, state in stored.targets.items()},
    )
    service._open[entry.id] = entry
    for target, state in stored.targets.items():
        if state.final:
            continue
        if request.command not in service.settings.allow:
            entry.targets[target] = "waiting"
            await service._finish(
                entry.id,
                target,
                "error",
                error=("not_allowed", f"{request.command} is no longer allowed"),
            )
        elif state.status == "running" and not spec.repeatable:
            await service._finish(
                entry.id,
                target,
                "error",
                error=(
                    "interrupted",
                    f"the gateway stopped while {request.command} ran on {target}; it may or may not have "
                    "taken effect: check, and send a new request if needed",
                ),
            )
        else:
            entry.targets[target] = "waiting"
            await service._dispatch(entry, target)
