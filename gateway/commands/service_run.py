"""The command service's dispatch and execution: each target to its worker, its push command
queue, or run here (buffer and gateway commands, a push terminal's device.info).

A terminal command runs in the worker's task (`_Job.run`), between reads; a repeatable one
whose terminal went away mid-way waits again, up to `RETRIES_AFTER_LOST_TERMINAL` times. Kept
apart from `service.py`, which holds the service's state, tasks and answers; these functions
take the service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from punchgate.drivers.base import (
    CommandRefusedError,
    CommandUnsupportedError,
    DriverError,
    DriverTimeoutError,
    UnreachableError,
)
from punchgate.gateway.commands import execute, push
from punchgate.gateway.commands.open_request import OpenRequest
from punchgate.gateway.commands.routing import cannot_run, terminal_kinds
from punchgate.gateway.push_commands import PushCommandQueue, push_command_queue
from punchgate.gateway.status import gateway_status
from punchgate.sync.command_contract import ResendRequest
from punchgate.sync.command_contract import response_json as render

if TYPE_CHECKING:
    from punchgate.gateway.commands.service import CommandService
    from punchgate.gateway.worker import DeviceWorker

# The service's logger: these lines are the service's, wherever the code sits.
log = structlog.get_logger("punchgate.gateway.commands.service")

RETRIES_AFTER_LOST_TERMINAL = 3  # a repeatable command whose terminal went away mid-way waits again


@dataclass
class _Job:
    """A target's run, queued on its terminal's worker (`worker.RemoteCommand`)."""

    service: CommandService
    request_id: str
    target: str

    async def run(self, worker: DeviceWorker) -> bool:
        return await self.service._run_on_worker(self.request_id, self.target, worker)


async def dispatch(service: CommandService, entry: OpenRequest, target: str) -> None:
    """Send one target on its way: to its worker, or run it here."""
    spec = entry.spec
    if spec.scope == "gateway":
        service._spawn(service._run_here(entry.id, target))
        return
    kind = terminal_kinds(service.app).get(target)
    if kind is None or kind == "disabled":
        await service._finish(
            entry.id, target, "error", error=("unknown_terminal", f"{target} is not read any more")
        )
        return
    queue = push_command_queue(service.app) if kind == "push" and spec.queued else None
    if queue is not None:
        service._spawn(service._run_push(entry.id, target, queue))
        return
    if spec.scope == "buffer" or (kind == "push" and spec.push):
        service._spawn(service._run_here(entry.id, target))
        return
    if kind == "push":
        why = (
            "the push protocol's command queue has no such command"
            if not spec.queued
            else "its command queue needs the [push] listener, which does not run"
        )
        await service._finish(
            entry.id, target, "error", error=("unsupported", f"{target} is a zk-push terminal: {why}")
        )
        return
    worker = service.app.workers[target]
    problem = cannot_run(worker, spec)
    if problem is not None:
        await service._finish(entry.id, target, "error", error=("unsupported", problem))
        return
    worker.submit(_Job(service, entry.id, target))


async def running(service: CommandService, entry: OpenRequest, target: str) -> None:
    entry.targets[target] = "running"
    if not entry.spec.repeatable:  # after a crash, "was it done?" must be answerable
        await asyncio.to_thread(service.store.command_status, entry.id, target, "running")
    service._publish(
        entry.reply_topic,
        entry.correlation,
        render(
            gateway=service.gateway_id,
            request_id=entry.id,
            command=entry.request.command,
            terminal=target or None,
            status="running",
        ),
    )


def startable(service: CommandService, request_id: str, target: str) -> OpenRequest | None:
    entry = service._open.get(request_id)
    if entry is None or entry.targets.get(target) != "waiting":
        return None  # answered meanwhile (expired), or a stale job
    return entry


async def run_here(service: CommandService, request_id: str, target: str) -> None:
    """A buffer or gateway command, or device.info or users.list of a push terminal: no worker
    involved."""
    entry = service._startable(request_id, target)
    if entry is None:
        return
    if time.time() >= entry.expires_at:
        await service._finish(request_id, target, "expired")
        return
    await service._running(entry, target)
    request = entry.request
    try:
        if request.command == "gateway.status":
            result = await asyncio.to_thread(gateway_status, service.app)
        elif isinstance(request, ResendRequest):
            result = await execute.resend(request, service.store, target, dt.datetime.now(dt.UTC))
            service.forwarder.rewind()
        elif request.command == "users.list":  # a zk-push terminal: the user list it uploaded
            terminal = push.terminal_entry(service.app.settings, target)
            stored = await asyncio.to_thread(service.store.get_device_meta, push.roster_key(target))
            result = push.roster_users(terminal, stored)
        else:
            result = execute.push_info(service.app.devices[target])
    except execute.CommandFailed as failed:
        await service._finish(request_id, target, "error", error=(failed.code, failed.message))
    except Exception as exc:
        log.exception("command_failed", id=request_id, terminal=target)
        await service._finish(request_id, target, "error", error=("internal", f"{type(exc).__name__}: {exc}"))
    else:
        await service._finish(request_id, target, "ok", result=result)


async def run_push(service: CommandService, request_id: str, target: str, queue: PushCommandQueue) -> None:
    """A command for a zk-push terminal, through its push command queue (`push.run`): the
    target stays `waiting` until the queue has sent it, then `running`."""
    entry = service._startable(request_id, target)
    if entry is None:
        return
    if time.time() >= entry.expires_at:
        await service._finish(request_id, target, "expired")
        return

    async def sent() -> None:
        if entry.targets.get(target) == "waiting":  # not answered meanwhile (the sweep's expiry)
            await service._running(entry, target)

    try:
        encoding, zone = push.terminal_config(service.app.settings, target)
        terminal = push.terminal_entry(service.app.settings, target)
        planned = await push.plan(
            entry.request, encoding=encoding, zone=zone, env=service.env, terminal=terminal
        )
        if not entry.spec.repeatable:  # queued: after a crash it is answered `interrupted`
            await asyncio.to_thread(service.store.command_status, entry.id, target, "running")
        done = await push.run(queue, target, planned, expires_at=entry.expires_at, on_sent=sent)
    except execute.CommandFailed as failed:
        await service._finish(request_id, target, "error", error=(failed.code, failed.message))
    except Exception as exc:
        log.exception("command_failed", id=request_id, terminal=target)
        await service._finish(request_id, target, "error", error=("internal", f"{type(exc).__name__}: {exc}"))
    else:
        await service._finish(request_id, target, done.status, result=done.result, error=done.error)


async def run_on_worker(service: CommandService, request_id: str, target: str, worker: DeviceWorker) -> bool:
    """A terminal command, in the worker's task (`_Job.run`); True ends the session."""
    entry = service._startable(request_id, target)
    if entry is None:
        return False
    if time.time() >= entry.expires_at:
        await service._finish(request_id, target, "expired")
        return False
    await service._running(entry, target)
    try:
        result, end_session = await execute.on_terminal(entry.request, worker, service.env)
    except execute.CommandFailed as failed:
        await service._finish(request_id, target, "error", error=(failed.code, failed.message))
        return False
    except CommandUnsupportedError as exc:
        await service._finish(request_id, target, "error", error=("unsupported", str(exc)))
        return False
    except CommandRefusedError as exc:
        await service._finish(request_id, target, "error", error=("refused", str(exc)))
        return False
    except (UnreachableError, DriverTimeoutError) as exc:
        entry.attempts[target] += 1
        if entry.spec.repeatable and entry.attempts[target] <= RETRIES_AFTER_LOST_TERMINAL:
            # The terminal went away mid-way: wait for it again, like a request that found it offline.
            entry.targets[target] = "waiting"
            log.info("command_waits_again", id=request_id, terminal=target, error=str(exc))
            worker.submit(_Job(service, request_id, target))
        else:
            await service._finish(request_id, target, "error", error=("terminal_error", str(exc)))
        raise
    except DriverError as exc:
        await service._finish(request_id, target, "error", error=("terminal_error", str(exc)))
        raise  # the worker ends the session, as after any failed contact
    except asyncio.CancelledError:
        raise  # shutting down: the buffer still has it open, the next start resumes it
    except Exception as exc:
        log.exception("command_failed", id=request_id, terminal=target)
        await service._finish(request_id, target, "error", error=("internal", f"{type(exc).__name__}: {exc}"))
        return False
    await service._finish(request_id, target, "ok", result=result)
    return end_session
