"""The composition root: builds the store, forwarder, health model and workers, and owns their tasks.

Shutdown (SIGTERM/SIGINT): tell systemd we are stopping, stop the workers (a commit in
progress finishes: it is shielded), give the forwarder the rest of the shutdown budget to
deliver what is pending, then close the store. Whatever is not delivered stays in the buffer.

`Application` keeps the order things start in and the state they share; the parts it runs sit
in modules of their own, each taking the application:

* `app_terminals`: each terminal's health model and, for a pulled terminal, its worker;
* `app_checks`: the gateway-level checks (buffer, broker, delivery delay, confirmations) and
  the status line systemd shows;
* `app_publish`: retained device states, fault and notice events, the audit chain's head and
  the `config_loaded` entry;
* `app_stop`: stopping within the shutdown budget.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from punchgate.drivers.config import TerminalConfig
from punchgate.gateway import __version__, app_checks, app_publish, app_stop, app_terminals, roster
from punchgate.gateway.clock import GatewayClock
from punchgate.gateway.commands.service import CommandService
from punchgate.gateway.commit_group import CommitGroup
from punchgate.gateway.faults import FaultSet, FaultTransition, Notice
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.logs import register_secret
from punchgate.gateway.sdnotify import SystemdNotifier
from punchgate.gateway.settings import Settings
from punchgate.gateway.staged_mover import StagedMover
from punchgate.gateway.worker import DeviceWorker
from punchgate.sync.audit import Head
from punchgate.sync.contract import STATE_REFRESH_SECONDS, DeviceState
from punchgate.sync.digests import DigestPublisher
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import BufferRefusedError, Store

log = structlog.get_logger(__name__)

RETENTION_EVERY = dt.timedelta(hours=1)
FAULT_HISTORY = 1000  # fault transitions kept in memory since start, the console's terminal pages


def _register_secrets(settings: Settings) -> None:
    if settings.mqtt.password is not None:
        register_secret(settings.mqtt.password.get_secret_value())
    for terminal in settings.terminals:
        key = getattr(terminal, "comm_key", None)
        if key is not None:
            register_secret(key.get_secret_value())


class Application:
    def __init__(self, settings: Settings, *, notifier: SystemdNotifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or SystemdNotifier()
        self.started_at = dt.datetime.now(dt.UTC)
        self.store: Store | None = None
        self.forwarder: Forwarder | None = None
        self.commits: CommitGroup | None = None  # polled terminals' punches, grouped per commit
        self.gateway_faults = FaultSet("")
        self.gateway_clock = GatewayClock(settings.health.gateway_clock)
        self.devices: dict[str, DeviceHealth] = {}
        self.workers: dict[str, DeviceWorker] = {}
        self._stop = asyncio.Event()
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._service_tasks: list[asyncio.Task[Any]] = []
        self.loop_heartbeat = time.monotonic()
        self._broker_lost_at: float | None = None
        self._last_status = ""
        # The status line's terminal states ("4998 online, 2 offline"), counted again only after
        # a terminal's change key moved (`_publish_device_state`): counting 5,000 terminals every
        # second was 3 % of the daemon's samples (issue 18). With the number of terminals counted.
        self._terminals_line: tuple[int, str] | None = None
        self.fault_transitions: Counter[tuple[str, str, str]] = Counter()  # (device or "", code, direction)
        self.fault_history: deque[FaultTransition] = deque(maxlen=FAULT_HISTORY)  # for the console
        self._published_states: dict[str, DeviceState] = {}  # the last retained state per terminal
        self._commands: CommandService | None = None  # remote commands (gateway/commands)
        self.staged_mover = StagedMover(self)  # staged punches into the outbox (push backlogs)
        self.digests: DigestPublisher | None = None  # kept by the stop (`app_stop`)

    def forwarder_alive(self) -> bool:
        return any(t.get_name() == "forwarder" and not t.done() for t in self._service_tasks)

    def request_stop(self) -> None:
        self._stop.set()

    # --- start-up ------------------------------------------------------------------------
    async def start(self) -> None:
        settings = self.settings
        _register_secrets(settings)
        # A damaged, missing or foreign buffer raises BufferRefusedError: see run_daemon.
        self.store = await asyncio.to_thread(Store.open, settings.buffer, gateway_id=settings.gateway_id)
        self.forwarder = Forwarder(settings, self.store, version=__version__)
        self.commits = CommitGroup(self.store, self.forwarder)
        self._commands = CommandService.attach(self, settings.commands)  # subscribes before connecting
        await self._start_audit()
        self.gateway_faults.on_transition.append(self._publish_transition)
        self.forwarder.on_connection_change.append(self._on_broker_connection)
        self._spawn_service(self.forwarder.run(), "forwarder")
        # Before any terminal: what an earlier run staged and answered goes to the outbox first.
        self._spawn_service(self.staged_mover.run(), "staged-mover")
        self._spawn_service(self.notifier.run_watchdog(), "watchdog")
        self._spawn_service(self._gateway_checks(), "gateway-checks")
        if settings.mqtt.digest_interval > 0:
            self.digests = DigestPublisher(
                settings, self.store, self.forwarder, [t.name for t in settings.terminals]
            )
            self._spawn_service(self.digests.run(), "digests")
        await self._start_http()

        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        scheduler.add_job(self._purge_delivered, "interval", seconds=RETENTION_EVERY.total_seconds())
        scheduler.add_job(self._refresh_device_states, "interval", seconds=STATE_REFRESH_SECONDS)
        scheduler.add_job(
            self._publish_audit_now, "interval", seconds=settings.audit.publish_interval_seconds
        )
        app_terminals.start_terminals(self)
        # Names for exports (gateway/roster.py): one refresher for every terminal.
        refresher = roster.RosterRefresher(self.store, settings.roster)
        self._spawn_service(refresher.run(list(self.workers.values())), "roster")
        scheduler.start()
        self._scheduler = scheduler
        await self._start_push()
        if self._commands is not None:  # once the workers exist: it resumes what waits for them
            self._spawn_service(self._commands.run(), "commands")
        status = f"reading {len(self._worker_tasks)} terminals"
        self.notifier.ready(status)
        log.info("gateway_started", gateway=settings.gateway_id, terminals=len(self._worker_tasks))

    def _build_worker(self, terminal: TerminalConfig) -> DeviceWorker:
        return app_terminals.build_worker(self, terminal)

    async def _start_http(self) -> None:
        if not self.settings.http.enabled:
            return
        # Imported here, so CLI commands that never serve HTTP do not load aiohttp.
        from punchgate.gateway.http import start_http_server

        self._http = await start_http_server(self)

    def _add_push_terminal(self, terminal: TerminalConfig) -> None:
        """A push terminal's health model, built like a pulled terminal's; gateway/push.py feeds it."""
        app_terminals.add_push_terminal(self, terminal)

    async def _start_push(self) -> None:
        """The listener push terminals upload to ([push]; gateway/push.py), when there are any."""
        from punchgate.gateway.push import PushService, push_enabled, push_terminals

        if push_enabled(self.settings):
            self._push = PushService(self, push_terminals(self.settings))
            await self._push.start()

    # --- the audit chain (docs/audit.md) -------------------------------------------------------
    async def _start_audit(self) -> None:
        """Publish the chain's head after every administrative action, and record the config
        this start runs with (what changed since the last start)."""
        await app_publish.start_audit(self)

    def _publish_audit_head(self, head: Head | None) -> None:
        app_publish.publish_audit_head(self, head)

    async def _publish_audit_now(self) -> None:
        assert self.store is not None
        self._publish_audit_head(await asyncio.to_thread(self.store.audit_head))

    def _spawn_service(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._service_done)
        self._service_tasks.append(task)

    def _service_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A dead core service is not a state to limp on in: stop, and let systemd restart us.
            log.error("service_task_died", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")
            self.request_stop()

    # --- health publishing ---------------------------------------------------------------
    def _device_state(self, health: DeviceHealth) -> DeviceState:
        return app_publish.device_state(self, health)

    def _publish_device_state(self, health: DeviceHealth, *, refresh: bool = False) -> None:
        """The retained state, on change only (`sync.contract.publish_due`); `refresh` sends it anyway."""
        self._terminals_line = None  # its state may have changed (`app_checks.report_status`)
        app_publish.publish_device_state(self, health, refresh=refresh)

    def _publish_if_counts_moved(self, health: DeviceHealth) -> None:
        app_publish.publish_if_counts_moved(self, health)

    def _republish_device_states(self) -> None:
        """Each published terminal state again, with a fresh `as_of`: every STATE_REFRESH_SECONDS
        and on every connect, so a consumer can tell a live state from one a stopped gateway left
        behind. Terminals not reported on yet stay unpublished (no `offline` flap at start-up)."""
        app_publish.republish_device_states(self)

    async def _refresh_device_states(self) -> None:
        self._republish_device_states()  # a coroutine, so the scheduler runs it on the event loop

    def _on_broker_connection(self, connected: bool, _reason: str) -> None:
        if connected:  # the forwarder resends the states it holds on connect: make them current
            self._republish_device_states()

    def _publish_transition(self, transition: FaultTransition) -> None:
        self._terminals_line = None  # a terminal's state may have changed with its faults
        app_publish.publish_transition(self, transition)

    def _publish_notice(self, notice: Notice) -> None:
        app_publish.publish_notice(self, notice)

    async def _gateway_checks(self) -> None:
        """Gateway-level faults: buffer limits and broker reachability, checked periodically."""
        await app_checks.gateway_checks(self)

    def _report_status(self) -> None:
        """A one-line summary for `systemctl status`, sent to systemd when it changes."""
        app_checks.report_status(self)

    def _check_broker(self) -> None:
        """broker_unreachable once the broker has been away for a moment, not at every blip
        (and not in the first instant after start, before the first connect completes)."""
        app_checks.check_broker(self)

    async def _check_delivery_delay(self) -> None:
        await app_checks.check_delivery_delay(self)

    async def _check_confirmations(self) -> None:
        """Central delivery: confirmation_delayed, and the retained gateway state's figures."""
        await app_checks.check_confirmations(self)

    def _store_fault_detail(self, code: str) -> str:
        return app_checks.store_fault_detail(self, code)

    async def _purge_delivered(self) -> None:
        assert self.store is not None
        removed = await asyncio.to_thread(self.store.purge_delivered, self.settings.buffer.retention_days)
        if removed:
            log.info("retention_purged", punches=removed)

    # --- running and stopping ------------------------------------------------------------
    async def run(self, *, early_signals: Sequence[int] = ()) -> int:
        """Run until a stop signal; `early_signals` holds those caught before the loop ran
        (`punchgate run` catches them from its first instruction on): stop without starting."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            if early_signals:  # read after the loop's handlers are in: no signal falls between
                log.info("gateway_stop_before_start", signal=signal.Signals(early_signals[0]).name)
                self.request_stop()
            else:
                await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
        return 0

    async def _drain_before_exit(self, deadline: float) -> None:
        """Give the forwarder what is left of the budget to deliver pending punches."""
        await app_stop.drain_before_exit(self, deadline)

    async def shutdown(self) -> None:
        await app_stop.shutdown(self)
        # Whatever the ZK sessions still had queued (thousands of goodbyes) is dropped rather
        # than run at the interpreter's exit. Looked up, not imported: a gateway without ZK
        # terminals never loads pyzk.
        zk_session = sys.modules.get("punchgate.drivers.zk.session")
        if zk_session is not None:
            zk_session.shutdown_pool()


# The daemon's exit code when its buffer is refused; the unit lists it in RestartPreventExitStatus.
EXIT_BUFFER_REFUSED = 3


def run_daemon(settings: Settings, *, early_signals: Sequence[int] = ()) -> int:
    """Run the gateway until a stop signal; the process exit code."""
    try:
        return asyncio.run(Application(settings).run(early_signals=early_signals))
    except BufferRefusedError as exc:
        # One line, no traceback: what is wrong and what to do. Restarting cannot help.
        log.error("buffer_refused", path=str(exc.path), problem=exc.problem, error=str(exc))
        return EXIT_BUFFER_REFUSED
    except Exception:
        log.exception("gateway_failed")
        return 1
