"""The composition root: builds the store, forwarder, health model and workers, and owns their tasks.

Shutdown (SIGTERM/SIGINT): tell systemd we are stopping, stop the workers (a commit in
progress finishes: it is shielded), give the forwarder the rest of the shutdown budget to
deliver what is pending, then close the store. Whatever is not delivered stays in the buffer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from punchgate.drivers.config import TerminalConfig
from punchgate.drivers.registry import create_driver
from punchgate.drivers.zk_push import is_push_terminal
from punchgate.gateway import __version__
from punchgate.gateway.clock import ClockCare, CorrectionPolicy, GatewayClock
from punchgate.gateway.commands.service import CommandService
from punchgate.gateway.faults import FaultSet, FaultTransition, Notice
from punchgate.gateway.health import DeviceHealth, Thresholds, calendar_for
from punchgate.gateway.logs import register_secret
from punchgate.gateway.sdnotify import SystemdNotifier
from punchgate.gateway.settings import Settings
from punchgate.gateway.worker import DeviceWorker
from punchgate.sync.audit import Head
from punchgate.sync.contract import STATE_REFRESH_SECONDS, AuditHead, DeviceEvent, DeviceState, publish_due
from punchgate.sync.digests import DigestPublisher
from punchgate.sync.faults import GatewayFault
from punchgate.sync.forwarder import Forwarder
from punchgate.sync.store import BufferRefusedError, Store

log = structlog.get_logger(__name__)

RETENTION_EVERY = dt.timedelta(hours=1)
# After start-up, first contacts come this far apart on average (up to one poll interval in
# all): a restarted fleet reads its terminals at a pace the gateway keeps up with instead of
# all at once, and each terminal is contacted within one poll interval. A first read of a
# realistic log (a few thousand records, all normalised and checked once after a restart)
# costs a tenth of a second or more of CPU; 0.25 s apart keeps that under half a core.
STARTUP_SPACING_SECONDS = 0.25
GATEWAY_CHECK_EVERY = 1.0  # seconds between checks of the buffer and broker
BROKER_FAULT_AFTER = 3.0  # seconds without a broker connection before broker_unreachable
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
        self.fault_transitions: Counter[tuple[str, str, str]] = Counter()  # (device or "", code, direction)
        self.fault_history: deque[FaultTransition] = deque(maxlen=FAULT_HISTORY)  # for the console
        self._published_states: dict[str, DeviceState] = {}  # the last retained state per terminal
        self._commands: CommandService | None = None  # remote commands (gateway/commands)

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
        self._commands = CommandService.attach(self, settings.commands)  # subscribes before connecting
        await self._start_audit()
        self.gateway_faults.on_transition.append(self._publish_transition)
        self.forwarder.on_connection_change.append(self._on_broker_connection)
        self._spawn_service(self.forwarder.run(), "forwarder")
        self._spawn_service(self.notifier.run_watchdog(), "watchdog")
        self._spawn_service(self._gateway_checks(), "gateway-checks")
        if settings.mqtt.digest_interval > 0:
            digests = DigestPublisher(
                settings, self.store, self.forwarder, [t.name for t in settings.terminals]
            )
            self._spawn_service(digests.run(), "digests")
        await self._start_http()

        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        pulled = sum(1 for t in settings.terminals if t.enabled and not is_push_terminal(t))
        scheduler.add_job(self._purge_delivered, "interval", seconds=RETENTION_EVERY.total_seconds())
        scheduler.add_job(self._refresh_device_states, "interval", seconds=STATE_REFRESH_SECONDS)
        scheduler.add_job(
            self._publish_audit_now, "interval", seconds=settings.audit.publish_interval_seconds
        )
        for terminal in settings.terminals:
            if not terminal.enabled:
                log.info("terminal_disabled_in_config", device=terminal.name)
                continue
            if is_push_terminal(terminal):  # it uploads to the [push] listener: health, no worker
                self._add_push_terminal(terminal)
                continue
            worker = self._build_worker(terminal)
            # Each worker polls on its own timer with its own phase within the interval, so a
            # fleet does not poll together; its first contact comes at the same point of the
            # start-up spread (as long as the fleet needs, at most one interval).
            interval = terminal.poll_interval
            worker.phase = random.uniform(0, interval)
            worker.first_poll_in = worker.phase * min(1.0, pulled * STARTUP_SPACING_SECONDS / interval)
            self._worker_tasks.append(asyncio.create_task(worker.run(), name=f"worker:{terminal.name}"))
        scheduler.start()
        self._scheduler = scheduler
        await self._start_push()
        if self._commands is not None:  # once the workers exist: it resumes what waits for them
            self._spawn_service(self._commands.run(), "commands")
        status = f"reading {len(self._worker_tasks)} terminals"
        self.notifier.ready(status)
        log.info("gateway_started", gateway=settings.gateway_id, terminals=len(self._worker_tasks))

    def _build_worker(self, terminal: TerminalConfig) -> DeviceWorker:
        assert self.store is not None and self.forwarder is not None
        health_settings = self.settings.terminal_health(terminal)
        timezone = self.settings.terminal_timezone(terminal)
        health = DeviceHealth(
            terminal.name,
            Thresholds.from_settings(self.settings.terminal_health(terminal)),
            calendar=calendar_for(health_settings, timezone),
        )
        health.faults.on_transition.append(self._publish_transition)
        health.on_change.append(self._publish_device_state)
        health.on_notice.append(self._publish_notice)
        clock_care = ClockCare(
            CorrectionPolicy(
                health_settings.clock_correct_min_seconds, health_settings.clock_correct_max_seconds
            ),
            self.gateway_clock,
        )
        self.devices[terminal.name] = health
        worker = DeviceWorker(
            terminal=terminal,
            driver=create_driver(terminal),
            store=self.store,
            sink=self.forwarder,
            health=health,
            timezone=timezone,
            driver_type=str(getattr(terminal, "type", "")),
            clear_log=bool(getattr(terminal, "clear_log", False)),
            clock_care=clock_care if clock_care.policy.enabled else None,
        )
        self.workers[terminal.name] = worker
        return worker

    async def _start_http(self) -> None:
        if not self.settings.http.enabled:
            return
        # Imported here, so CLI commands that never serve HTTP do not load aiohttp.
        from punchgate.gateway.http import start_http_server

        self._http = await start_http_server(self)

    def _add_push_terminal(self, terminal: TerminalConfig) -> None:
        """A push terminal's health model, built like a pulled terminal's; gateway/push.py feeds it."""
        health_settings = self.settings.terminal_health(terminal)
        health = DeviceHealth(
            terminal.name,
            Thresholds.from_settings(health_settings),
            calendar=calendar_for(health_settings, self.settings.terminal_timezone(terminal)),
        )
        health.faults.on_transition.append(self._publish_transition)
        health.on_change.append(self._publish_device_state)
        health.on_notice.append(self._publish_notice)
        self.devices[terminal.name] = health

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
        assert self.store is not None
        loop = asyncio.get_running_loop()

        def published(head: Head) -> None:  # called in the committing thread
            loop.call_soon_threadsafe(self._publish_audit_head, head)

        self.store.on_audit_action.append(published)
        entry = await asyncio.to_thread(
            config_entry, self.settings, self.store.last_audit_entry("config_loaded")
        )
        await asyncio.to_thread(self.store.audit_action, "config_loaded", entry)

    def _publish_audit_head(self, head: Head | None) -> None:
        if self.forwarder is None or head is None:
            return
        self.forwarder.publish_audit_head(
            AuditHead(
                gateway=self.settings.gateway_id,
                seq=head.seq,
                hash=head.hash,
                kind=head.kind,
                at=dt.datetime.fromisoformat(head.at.replace("Z", "+00:00")),
                as_of=dt.datetime.now(dt.UTC),
            )
        )

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
        return DeviceState.model_validate(
            {**health.snapshot(), "gateway": self.settings.gateway_id, "as_of": dt.datetime.now(dt.UTC)}
        )

    def _publish_device_state(self, health: DeviceHealth, *, refresh: bool = False) -> None:
        """The retained state, on change only (`sync.contract.publish_due`); `refresh` sends it anyway."""
        if self.forwarder is None:
            return
        state = self._device_state(health)
        if refresh or publish_due(self._published_states.get(health.name), state):
            self._published_states[health.name] = state
            self.forwarder.publish_device_state(health.name, state)

    def _republish_device_states(self) -> None:
        """Each published terminal state again, with a fresh `as_of`: every STATE_REFRESH_SECONDS
        and on every connect, so a consumer can tell a live state from one a stopped gateway left
        behind. Terminals not reported on yet stay unpublished (no `offline` flap at start-up)."""
        for health in self.devices.values():
            if health.name in self._published_states:
                self._publish_device_state(health, refresh=True)

    async def _refresh_device_states(self) -> None:
        self._republish_device_states()  # a coroutine, so the scheduler runs it on the event loop

    def _on_broker_connection(self, connected: bool, _reason: str) -> None:
        if connected:  # the forwarder resends the states it holds on connect: make them current
            self._republish_device_states()

    def _publish_transition(self, transition: FaultTransition) -> None:
        direction = "raised" if transition.raised else "cleared"
        self.fault_transitions[(transition.device, transition.code, direction)] += 1
        self.fault_history.append(transition)
        if self.forwarder is None:
            return
        event = DeviceEvent(
            device=transition.device,
            event="fault_raised" if transition.raised else "fault_cleared",
            code=transition.code,
            severity=transition.severity.value,
            detail=transition.detail,
            time=transition.at,
        )
        if transition.device:
            self.forwarder.publish_event(transition.device, event)
        else:
            self.forwarder.publish_gateway_event(event)

    def _publish_notice(self, notice: Notice) -> None:
        if self.forwarder is None:
            return
        event = DeviceEvent(
            device=notice.device,
            event=notice.event,
            code=notice.code,
            severity=notice.severity.value,
            detail=notice.detail,
            time=notice.at,
        )
        self.forwarder.publish_event(notice.device, event)

    async def _gateway_checks(self) -> None:
        """Gateway-level faults: buffer limits and broker reachability, checked periodically."""
        assert self.store is not None and self.forwarder is not None
        while True:
            self.loop_heartbeat = time.monotonic()
            store_faults = await asyncio.to_thread(self.store.active_faults)
            for code in (GatewayFault.BUFFER_FULL, GatewayFault.DISK_LOW):
                self.gateway_faults.set(code, code in store_faults, self._store_fault_detail(code))
            self._check_broker()
            await self._check_delivery_delay()
            await self._check_confirmations()
            self._report_status()
            await asyncio.sleep(GATEWAY_CHECK_EVERY)

    def _report_status(self) -> None:
        """A one-line summary for `systemctl status`, sent to systemd when it changes."""
        assert self.store is not None and self.forwarder is not None
        states = Counter(health.status.value for health in self.devices.values())
        terminals = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no terminals"
        broker = "broker connected" if self.forwarder.connected else "broker NOT connected"
        faults = ", ".join(sorted(self.gateway_faults.active)) or "no gateway faults"
        line = f"{terminals}; {broker}; {self.store.pending_count()} pending; {faults}"
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)

    def _check_broker(self) -> None:
        """broker_unreachable once the broker has been away for a moment, not at every blip
        (and not in the first instant after start, before the first connect completes)."""
        assert self.forwarder is not None
        now = time.monotonic()
        if self.forwarder.connected:
            self._broker_lost_at = None
        elif self._broker_lost_at is None:
            self._broker_lost_at = now
        away = self._broker_lost_at is not None and now - self._broker_lost_at >= BROKER_FAULT_AFTER
        self.gateway_faults.set(
            GatewayFault.BROKER_UNREACHABLE, away, self.forwarder.stats.last_error or "not connected"
        )

    async def _check_delivery_delay(self) -> None:
        assert self.store is not None and self.forwarder is not None
        limit = self.settings.health.max_pending_age_seconds
        # Central delivery: a punch sent and waiting for its confirmation is confirmation_delayed's.
        oldest = (
            self.store.oldest_pending_age if self.forwarder.central is None else self.store.oldest_unsent_age
        )
        age = await asyncio.to_thread(oldest)
        late = bool(limit) and age is not None and age > limit
        detail = f"oldest undelivered punch waits {age or 0:.0f} s (limit {limit:g} s)"
        self.gateway_faults.set(GatewayFault.DELIVERY_DELAYED, late, detail)

    async def _check_confirmations(self) -> None:
        """Central delivery: confirmation_delayed, and the retained gateway state's figures."""
        assert self.forwarder is not None
        central = self.forwarder.central
        if central is None:
            return
        figures = await asyncio.to_thread(central.figures)
        limit = self.settings.mqtt.max_unconfirmed_age
        age = figures["oldest_unconfirmed_age_seconds"]
        late = bool(limit) and age is not None and age > limit
        detail = (
            f"{figures['unconfirmed']} punches sent and not confirmed by central; the oldest was stored "
            f"{age or 0:.0f} s ago (limit {limit:g} s)"
        )
        self.gateway_faults.set(GatewayFault.CONFIRMATION_DELAYED, late, detail)
        state = central.gateway_state(figures, version=__version__, started_at=self.forwarder.started_at)
        if state is not None:
            self.forwarder.publish_retained(self.forwarder.topics.gateway_state, state)

    def _store_fault_detail(self, code: str) -> str:
        buffer = self.settings.buffer
        if code == GatewayFault.BUFFER_FULL:
            return f"{buffer.max_pending} undelivered punches; terminals are not read until the buffer drains"
        return f"less than {buffer.min_free_disk_mb} MB free for {buffer.path}; terminals are not read"

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
        assert self.store is not None and self.forwarder is not None
        while time.monotonic() < deadline and self.forwarder.connected and self.forwarder_alive():
            # Central delivery: what waits for a confirmation is sent again after a restart anyway.
            unconfirmed = self.store.unconfirmed_count() if self.forwarder.central else 0
            pending = await asyncio.to_thread(self.store.pending_count)
            if pending - unconfirmed <= 0:
                return
            self.forwarder.notify_new_punches()
            await asyncio.sleep(0.1)

    async def shutdown(self) -> None:
        budget = self.settings.shutdown_timeout
        deadline = time.monotonic() + budget
        self.notifier.stopping("shutting down")
        log.info("gateway_stopping", timeout=budget)
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        for task in self._worker_tasks:
            task.cancel()
        if self._worker_tasks:
            await asyncio.wait(self._worker_tasks, timeout=max(0.1, deadline - time.monotonic()))
        push = getattr(self, "_push", None)
        if push is not None:  # no new uploads; one being committed finishes (the commit is shielded)
            await push.close()
        if self.forwarder is not None and self.store is not None:
            await self._drain_before_exit(deadline)
        http = getattr(self, "_http", None)
        if http is not None:
            await http.close()
        for task in self._service_tasks:
            task.cancel()
        await asyncio.gather(*self._service_tasks, return_exceptions=True)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        log.info("gateway_stopped")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def config_entry(settings: Settings, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The `config_loaded` audit entry: the settings this start runs with (secrets masked, as
    pydantic dumps them), their digest, and the keys changed since the last start's entry."""
    import hashlib
    import json

    flat = json.loads(json.dumps(_flatten(settings.model_dump(mode="json")), default=str))
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()
    before = (previous or {}).get("config") or {}
    changed = sorted(key for key in set(flat) | set(before) if flat.get(key) != before.get(key))
    return {
        "digest": digest,
        "first": previous is None,
        "changed": changed if previous else [],
        "config": flat,
    }


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
