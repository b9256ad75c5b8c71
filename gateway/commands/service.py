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

`CommandService` holds the state, the tasks and the final answers (`_finish`); its other steps
are thin delegations to modules of their own, each taking the service: `service_intake`
(reading, accepting, refusing, repeats), `service_run` (dispatch to a worker, a push command
queue or here, and running there), `service_resume` (start-up).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from punchgate.gateway.commands import execute, service_intake, service_resume, service_run
from punchgate.gateway.commands.audit_entries import done_entry
from punchgate.gateway.commands.command_metrics import command_metrics
from punchgate.gateway.commands.intake import Accepted, Rejection, masked
from punchgate.gateway.commands.open_request import OpenRequest
from punchgate.gateway.commands.settings import CommandsSettings
from punchgate.gateway.push_commands import PushCommandQueue
from punchgate.sync.command_contract import FINAL_STATUSES, Status
from punchgate.sync.command_contract import response_json as render
from punchgate.sync.command_store import FinalAnswer, StoredRequest
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
        await service_intake.take(self, messages)

    async def submit(self, payload: bytes, *, response_topic: str | None = None) -> Rejection | None:
        """A request made inside the gateway (the site console), taken as one from the broker
        (`service_intake.take_one`): its refusal, or None once accepted or answered as a repeat.
        Its answers are published too, on `response_topic` (the default response topic or below)."""
        message = Incoming(self.forwarder.topics.command_request, payload, response_topic)
        return await service_intake.take_one(self, message)

    async def _refuse(self, rejection: Rejection, message: Incoming) -> bool:
        """A refused request, unless its id is known: that one is answered from the buffer
        whatever the repeat says (a retry from a newer requester, or after the allow list
        changed): never run again, never refused. True when answered as a repeat."""
        return await service_intake.refuse(self, rejection, message)

    async def _open_request(self, outcome: Accepted, entry: dict[str, Any]) -> None:
        """A request just stored: answer `accepted`, then send each target on its way."""
        await service_intake.open_request(self, outcome, entry)

    async def _reject(self, rejection: Rejection, message: Incoming) -> None:
        await service_intake.reject(self, rejection, message)

    def _answer_repeat(self, stored: StoredRequest, topic: str, correlation: bytes | None) -> None:
        service_intake.answer_repeat(self, stored, topic, correlation)

    # --- running ------------------------------------------------------------------------------
    async def _dispatch(self, entry: OpenRequest, target: str) -> None:
        """Send one target on its way: to its worker, or run it here."""
        await service_run.dispatch(self, entry, target)

    async def _running(self, entry: OpenRequest, target: str) -> None:
        await service_run.running(self, entry, target)

    def _startable(self, request_id: str, target: str) -> OpenRequest | None:
        return service_run.startable(self, request_id, target)

    async def _run_here(self, request_id: str, target: str) -> None:
        """A buffer or gateway command, or device.info of a push terminal: no worker involved."""
        await service_run.run_here(self, request_id, target)

    async def _run_push(self, request_id: str, target: str, queue: PushCommandQueue) -> None:
        """A command for a zk-push terminal, through its push command queue (`push.run`): the
        target stays `waiting` until the queue has sent it, then `running`."""
        await service_run.run_push(self, request_id, target, queue)

    async def _run_on_worker(self, request_id: str, target: str, worker: DeviceWorker) -> bool:
        """A terminal command, in the worker's task (`_Job.run`); True ends the session."""
        return await service_run.run_on_worker(self, request_id, target, worker)

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
        await service_resume.resume(self)

    async def _reopen(self, stored: StoredRequest) -> None:
        await service_resume.reopen(self, stored)

    # --- /metrics -------------------------------------------------------------------------------
    def metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        return command_metrics(self.requests, self.rejected, self.results, self._open.values())


def command_service(app: Application) -> CommandService | None:
    """The running gateway's command service; None when `[commands]` is off (or not started)."""
    service = getattr(app, "_commands", None)  # set by Application.start (gateway/app.py)
    return service if isinstance(service, CommandService) else None
