"""The command service: takes requests off the broker, stores them, runs them, answers them.

One intake task reads requests in the order they arrived (`intake.read_request`). A refused
request is answered `error` at once, counted and logged (and, when it named an id, audited as
`command_refused`); nothing runs. An accepted one is stored in the buffer with one row per
target and a `command_accepted` audit entry, in one transaction, *before* it is answered
`accepted`: from then on it survives a crash. A request id the buffer knows is never run again:
each target is answered with its stored final answer, or where it got to, marked `repeat`.

Targets run where they belong: a terminal command is queued on that terminal's worker
(`DeviceWorker.submit`), so it runs in the one task that owns the terminal, between reads, and
waits there while the terminal is offline; a buffer command (punches.resend) and gateway.status
run here. Each target's final answer is stored with a `command_done` audit entry before it is
published, and marked published on its PUBACK. A sweep answers `expired` to targets still
waiting at their expiry, flushes those marks, and forgets finished requests after
`remember_days`.

At start-up, `run` resumes what the buffer holds: open targets are queued again (a target that
was running when the gateway died runs again if it is safe to repeat; a restart or a clear is
answered `interrupted` instead) and final answers never acknowledged are published again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from punchgate.drivers.base import (
    CommandRefusedError,
    CommandUnsupportedError,
    DriverError,
    DriverTimeoutError,
    UnreachableError,
)
from punchgate.gateway.commands import execute, push
from punchgate.gateway.commands.audit_entries import accepted_rows, done_entry, refused_entry
from punchgate.gateway.commands.catalogue import CATALOGUE
from punchgate.gateway.commands.command_metrics import command_metrics
from punchgate.gateway.commands.intake import Accepted, Rejection, masked, read_request
from punchgate.gateway.commands.open_request import OpenRequest
from punchgate.gateway.commands.routing import cannot_run, terminal_kinds
from punchgate.gateway.commands.settings import CommandsSettings
from punchgate.gateway.push_commands import PushCommandQueue, push_command_queue
from punchgate.gateway.status import gateway_status
from punchgate.sync.command_contract import FINAL_STATUSES, ResendRequest, Status, parse_request
from punchgate.sync.command_contract import response_json as render
from punchgate.sync.command_store import FinalAnswer, NewRequest, StoredRequest
from punchgate.sync.contract import utc_iso
from punchgate.sync.forwarder import Incoming, Reply

if TYPE_CHECKING:
    from punchgate.gateway.app import Application
    from punchgate.gateway.worker import DeviceWorker

log = structlog.get_logger(__name__)

INTAKE_QUEUE = 1000  # requests waiting to be read; beyond, they are dropped (and counted)
INTAKE_BATCH = 200  # requests accepted in one commit at most
SWEEP_SECONDS = 0.5
PURGE_EVERY = 3600.0
RETRIES_AFTER_LOST_TERMINAL = 3  # a repeatable command whose terminal went away mid-way waits again


@dataclass
class _Job:
    """A target's run, queued on its terminal's worker (`worker.RemoteCommand`)."""

    service: CommandService
    request_id: str
    target: str

    async def run(self, worker: DeviceWorker) -> bool:
        return await self.service._run_on_worker(self.request_id, self.target, worker)


class CommandService:
    """Remote commands over MQTT (module docstring). `attach` before the forwarder runs; then
    `run()` as a service task once the workers exist."""

    def __init__(self, app: Application, settings: CommandsSettings) -> None:
        assert app.store is not None and app.forwarder is not None
        self.app = app
        self.settings = settings
        self.store = app.store
        self.forwarder = app.forwarder
        self.gateway_id = app.settings.gateway_id
        self.default_topic = self.forwarder.topics.command_response
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue(INTAKE_QUEUE)
        self._open: dict[str, OpenRequest] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._acked: list[tuple[str, str]] = []
        self._final_queue: list[tuple[FinalAnswer, asyncio.Future[bool]]] = []
        self._final_wake = asyncio.Event()
        self.env = execute.Environment(settings=settings, gateway_clock=app.gateway_clock)
        # /metrics (docs/mqtt-contract.md, "Remote commands")
        self.requests: Counter[str] = Counter()  # accepted, repeat, rejected, dropped
        self.rejected: Counter[str] = Counter()  # by error code
        self.results: Counter[tuple[str, str]] = Counter()  # (command, final status)

    @classmethod
    def attach(cls, app: Application, settings: CommandsSettings) -> CommandService | None:
        """Subscribe to the request topic (before the forwarder connects); None when disabled."""
        if not settings.enabled:
            return None
        service = cls(app, settings)
        service.forwarder.subscribe(service.forwarder.topics.command_request, service._incoming)
        return service

    def _incoming(self, message: Incoming) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.requests["dropped"] += 1
            log.warning("command_dropped", reason=f"more than {INTAKE_QUEUE} requests waiting to be read")

    # --- the tasks ----------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._finisher())  # resuming may answer already
                await self._resume()
                group.create_task(self._intake())
                group.create_task(self._sweep())
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._acked:  # stopping: answers acknowledged are not sent again after the restart
                acked, self._acked = self._acked, []
                await asyncio.shield(asyncio.to_thread(self.store.command_published, acked))

    async def _intake(self) -> None:
        """Requests in arrival order; what queued up meanwhile is accepted in one commit."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < INTAKE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._take(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must never stop the intake; these requests go unanswered
                log.exception("command_intake_failed", requests=len(batch))

    async def _finisher(self) -> None:
        """Final answers, stored with their audit entries: what queued up meanwhile in one commit."""
        while True:
            await self._final_wake.wait()
            self._final_wake.clear()
            batch, self._final_queue = self._final_queue, []
            if not batch:
                continue
            try:
                stored = await asyncio.to_thread(
                    self.store.command_finish_many, [answer for answer, _ in batch]
                )
            except Exception as exc:
                log.exception("command_answers_not_stored", answers=len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), written in zip(batch, stored, strict=True):
                if not future.done():
                    future.set_result(written)

    async def _sweep(self) -> None:
        purged_at = 0.0
        while True:
            now = time.time()
            for request_id, entry in list(self._open.items()):
                if now < entry.expires_at:
                    continue
                for target, status in list(entry.targets.items()):
                    if status == "waiting":
                        await self._finish(request_id, target, "expired")
            if self._acked:
                acked, self._acked = self._acked, []
                await asyncio.to_thread(self.store.command_published, acked)
            if now - purged_at >= PURGE_EVERY:
                purged_at = now
                forgotten = await asyncio.to_thread(self.store.command_purge, self.settings.remember_days)
                if forgotten:
                    log.info(
                        "commands_forgotten", requests=forgotten, older_than_days=self.settings.remember_days
                    )
            await asyncio.sleep(SWEEP_SECONDS)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- intake -------------------------------------------------------------------------------
    async def _take(self, messages: list[Incoming]) -> None:
        now = time.time()
        kinds = terminal_kinds(self.app)
        accepted: list[tuple[Accepted, NewRequest, dict[str, Any]]] = []
        for message in messages:
            outcome = read_request(
                message.payload,
                settings=self.settings,
                kinds=kinds,
                default_topic=self.default_topic,
                response_topic=message.response_topic,
                correlation=message.correlation_data,
                now=now,
            )
            if isinstance(outcome, Rejection):
                await self._refuse(outcome, message)
            else:
                accepted.append((outcome, *accepted_rows(outcome, now)))
        if not accepted:
            return
        stored = await asyncio.to_thread(
            self.store.command_accept_many, [(new, entry) for _, new, entry in accepted]
        )
        for (outcome, _new, entry), existing in zip(accepted, stored, strict=True):
            if existing is not None:
                self.requests["repeat"] += 1
                log.info(
                    "command_repeated",
                    id=outcome.id,
                    command=existing.command,
                    requester=outcome.request.requester,
                )
                self._answer_repeat(existing, outcome.reply_topic, outcome.correlation)
            else:
                await self._open_request(outcome, entry)

    async def _refuse(self, rejection: Rejection, message: Incoming) -> None:
        """A refused request, unless its id is known: that one is answered from the buffer
        whatever the repeat says (a retry from a newer requester, or after the allow list
        changed): never run again, never refused."""
        known = None
        if rejection.request_id is not None:
            known = await asyncio.to_thread(self.store.command_get, rejection.request_id)
        if known is None:
            await self._reject(rejection, message)
            return
        self.requests["repeat"] += 1
        log.info("command_repeated", id=known.id, command=known.command, requester=rejection.requester)
        self._answer_repeat(known, rejection.reply_topic or self.default_topic, message.correlation_data)

    async def _open_request(self, outcome: Accepted, entry: dict[str, Any]) -> None:
        """A request just stored: answer `accepted`, then send each target on its way."""
        self.requests["accepted"] += 1
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
        self._open[opened.id] = opened
        self._publish(
            opened.reply_topic,
            opened.correlation,
            render(
                gateway=self.gateway_id,
                request_id=opened.id,
                command=opened.request.command,
                terminal=None,
                status="accepted",
                result={"terminals": entry["terminals"], "expires_at": entry["expires_at"]},
            ),
        )
        for target in outcome.targets:
            await self._dispatch(opened, target)

    async def _reject(self, rejection: Rejection, message: Incoming) -> None:
        self.requests["rejected"] += 1
        self.rejected[rejection.code] += 1
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
            await asyncio.to_thread(self.store.audit_action, "command_refused", entry)
        self._publish(
            rejection.reply_topic or self.default_topic,
            message.correlation_data,
            render(
                gateway=self.gateway_id,
                request_id=rejection.request_id,
                command=rejection.command,
                terminal=None,
                status="error",
                error=(rejection.code, rejection.message),
            ),
        )

    def _answer_repeat(self, stored: StoredRequest, topic: str, correlation: bytes | None) -> None:
        for target, state in stored.targets.items():
            if state.response is not None:
                answer = json.loads(state.response)
                answer["repeat"] = True
                answer["at"] = utc_iso(dt.datetime.now(dt.UTC))
                payload = json.dumps(answer, separators=(",", ":")).encode()
            else:
                status: Status = "running" if state.status == "running" else "accepted"
                payload = render(
                    gateway=self.gateway_id,
                    request_id=stored.id,
                    command=stored.command,
                    terminal=target or None,
                    status=status,
                    repeat=True,
                )
            self._publish(topic, correlation, payload)

    # --- running ------------------------------------------------------------------------------
    async def _dispatch(self, entry: OpenRequest, target: str) -> None:
        """Send one target on its way: to its worker, or run it here."""
        spec = entry.spec
        if spec.scope == "gateway":
            self._spawn(self._run_here(entry.id, target))
            return
        kind = terminal_kinds(self.app).get(target)
        if kind is None or kind == "disabled":
            await self._finish(
                entry.id, target, "error", error=("unknown_terminal", f"{target} is not read any more")
            )
            return
        queue = push_command_queue(self.app) if kind == "push" and spec.queued else None
        if queue is not None:
            self._spawn(self._run_push(entry.id, target, queue))
            return
        if spec.scope == "buffer" or (kind == "push" and spec.push):
            self._spawn(self._run_here(entry.id, target))
            return
        if kind == "push":
            why = (
                "the push protocol's command queue has no such command"
                if not spec.queued
                else "its command queue needs the [push] listener, which does not run"
            )
            await self._finish(
                entry.id, target, "error", error=("unsupported", f"{target} is a zk-push terminal: {why}")
            )
            return
        worker = self.app.workers[target]
        problem = cannot_run(worker, spec)
        if problem is not None:
            await self._finish(entry.id, target, "error", error=("unsupported", problem))
            return
        worker.submit(_Job(self, entry.id, target))

    async def _running(self, entry: OpenRequest, target: str) -> None:
        entry.targets[target] = "running"
        if not entry.spec.repeatable:  # after a crash, "was it done?" must be answerable
            await asyncio.to_thread(self.store.command_status, entry.id, target, "running")
        self._publish(
            entry.reply_topic,
            entry.correlation,
            render(
                gateway=self.gateway_id,
                request_id=entry.id,
                command=entry.request.command,
                terminal=target or None,
                status="running",
            ),
        )

    def _startable(self, request_id: str, target: str) -> OpenRequest | None:
        entry = self._open.get(request_id)
        if entry is None or entry.targets.get(target) != "waiting":
            return None  # answered meanwhile (expired), or a stale job
        return entry

    async def _run_here(self, request_id: str, target: str) -> None:
        """A buffer or gateway command, or device.info of a push terminal: no worker involved."""
        entry = self._startable(request_id, target)
        if entry is None:
            return
        if time.time() >= entry.expires_at:
            await self._finish(request_id, target, "expired")
            return
        await self._running(entry, target)
        request = entry.request
        try:
            if request.command == "gateway.status":
                result = await asyncio.to_thread(gateway_status, self.app)
            elif isinstance(request, ResendRequest):
                result = await execute.resend(request, self.store, target, dt.datetime.now(dt.UTC))
                self.forwarder.rewind()
            else:
                result = execute.push_info(self.app.devices[target])
        except execute.CommandFailed as failed:
            await self._finish(request_id, target, "error", error=(failed.code, failed.message))
        except Exception as exc:
            log.exception("command_failed", id=request_id, terminal=target)
            await self._finish(
                request_id, target, "error", error=("internal", f"{type(exc).__name__}: {exc}")
            )
        else:
            await self._finish(request_id, target, "ok", result=result)

    async def _run_push(self, request_id: str, target: str, queue: PushCommandQueue) -> None:
        """A command for a zk-push terminal, through its push command queue (`push.run`): the
        target stays `waiting` until the queue has sent it, then `running`."""
        entry = self._startable(request_id, target)
        if entry is None:
            return
        if time.time() >= entry.expires_at:
            await self._finish(request_id, target, "expired")
            return

        async def sent() -> None:
            if entry.targets.get(target) == "waiting":  # not answered meanwhile (the sweep's expiry)
                await self._running(entry, target)

        try:
            encoding, zone = push.terminal_config(self.app.settings, target)
            planned = await push.plan(entry.request, encoding=encoding, zone=zone, env=self.env)
            if not entry.spec.repeatable:  # queued: after a crash it is answered `interrupted`
                await asyncio.to_thread(self.store.command_status, entry.id, target, "running")
            done = await push.run(queue, target, planned, expires_at=entry.expires_at, on_sent=sent)
        except execute.CommandFailed as failed:
            await self._finish(request_id, target, "error", error=(failed.code, failed.message))
        except Exception as exc:
            log.exception("command_failed", id=request_id, terminal=target)
            await self._finish(
                request_id, target, "error", error=("internal", f"{type(exc).__name__}: {exc}")
            )
        else:
            await self._finish(request_id, target, done.status, result=done.result, error=done.error)

    async def _run_on_worker(self, request_id: str, target: str, worker: DeviceWorker) -> bool:
        """A terminal command, in the worker's task (`_Job.run`); True ends the session."""
        entry = self._startable(request_id, target)
        if entry is None:
            return False
        if time.time() >= entry.expires_at:
            await self._finish(request_id, target, "expired")
            return False
        await self._running(entry, target)
        try:
            result, end_session = await execute.on_terminal(entry.request, worker, self.env)
        except execute.CommandFailed as failed:
            await self._finish(request_id, target, "error", error=(failed.code, failed.message))
            return False
        except CommandUnsupportedError as exc:
            await self._finish(request_id, target, "error", error=("unsupported", str(exc)))
            return False
        except CommandRefusedError as exc:
            await self._finish(request_id, target, "error", error=("refused", str(exc)))
            return False
        except (UnreachableError, DriverTimeoutError) as exc:
            entry.attempts[target] += 1
            if entry.spec.repeatable and entry.attempts[target] <= RETRIES_AFTER_LOST_TERMINAL:
                # The terminal went away mid-way: wait for it again, like a request that found it offline.
                entry.targets[target] = "waiting"
                log.info("command_waits_again", id=request_id, terminal=target, error=str(exc))
                worker.submit(_Job(self, request_id, target))
            else:
                await self._finish(request_id, target, "error", error=("terminal_error", str(exc)))
            raise
        except DriverError as exc:
            await self._finish(request_id, target, "error", error=("terminal_error", str(exc)))
            raise  # the worker ends the session, as after any failed contact
        except asyncio.CancelledError:
            raise  # shutting down: the buffer still has it open, the next start resumes it
        except Exception as exc:
            log.exception("command_failed", id=request_id, terminal=target)
            await self._finish(
                request_id, target, "error", error=("internal", f"{type(exc).__name__}: {exc}")
            )
            return False
        await self._finish(request_id, target, "ok", result=result)
        return end_session

    async def _finish(
        self,
        request_id: str,
        target: str,
        status: Status,
        *,
        result: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        """Store a target's final answer (with its audit entry), then publish it."""
        entry = self._open.get(request_id)
        if entry is None or entry.targets.get(target) in FINAL_STATUSES:
            return
        entry.targets[target] = status
        command = entry.request.command
        if status == "expired":
            expired = utc_iso(dt.datetime.fromtimestamp(entry.expires_at, dt.UTC))
            error = None
            result = {"expired_at": expired}
        payload = render(
            gateway=self.gateway_id,
            request_id=request_id,
            command=command,
            terminal=target or None,
            status=status,
            result=result,
            error=error,
        )
        shown = masked(entry.document)
        audit = done_entry(entry, target, shown, status, result=result, error=error)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._final_queue.append(
            (FinalAnswer(request_id, target, status, payload.decode(), audit, shown), future)
        )
        self._final_wake.set()
        stored = await future  # `_finisher` commits it, with whatever else is final by then
        self.results[(command, status)] += 1
        log.info(
            "command_done",
            id=request_id,
            command=command,
            terminal=target or None,
            status=status,
            error=None if error is None else error[0],
            reason=None if error is None else error[1],
        )
        if all(s in FINAL_STATUSES for s in entry.targets.values()):
            self._open.pop(request_id, None)
        if stored:
            acked = functools.partial(self._acked.append, (request_id, target))
            self._publish(entry.reply_topic, entry.correlation, payload, on_sent=acked)

    def _publish(
        self,
        topic: str,
        correlation: bytes | None,
        payload: bytes,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.forwarder.publish_reply(Reply(topic, payload, correlation, on_sent))

    # --- resuming after a restart ----------------------------------------------------------------
    async def _resume(self) -> None:
        stored = await asyncio.to_thread(self.store.command_open)
        resumed = 0
        for request in stored:
            for target, state in request.targets.items():
                if state.final and not state.published and state.response is not None:
                    self._publish(
                        request.reply_topic,
                        request.correlation,
                        state.response.encode(),
                        on_sent=functools.partial(self._acked.append, (request.id, target)),
                    )
            if request.done_at is None:
                resumed += 1
                await self._reopen(request)
        if stored:
            log.info("commands_resumed", requests=resumed, answers_republished=len(stored) - resumed)

    async def _reopen(self, stored: StoredRequest) -> None:
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
        self._open[entry.id] = entry
        for target, state in stored.targets.items():
            if state.final:
                continue
            if request.command not in self.settings.allow:
                entry.targets[target] = "waiting"
                await self._finish(
                    entry.id,
                    target,
                    "error",
                    error=("not_allowed", f"{request.command} is no longer allowed"),
                )
            elif state.status == "running" and not spec.repeatable:
                await self._finish(
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
                await self._dispatch(entry, target)

    # --- /metrics -------------------------------------------------------------------------------
    def metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        return command_metrics(self.requests, self.rejected, self.results, self._open.values())
