"""The listener push terminals upload to, and the gateway's side of the push receiver.

`PushService` serves the zk-push receiver (`punchgate.drivers.zk_push.receiver`) on its own
aiohttp listener, from the `[push]` section: it faces the LAN (the loopback API in
`gateway/http.py` does not), so it is a separate socket with its own limits:

* at most `MAX_CONNECTIONS` connections, a request head within `HEADER_TIMEOUT` and a body
  within `BODY_TIMEOUT` (`http_limits.ConnectionGuard`, as the API uses), at most
  `MAX_REQUESTS` requests in progress (more: 503, the terminal retries), bodies up to
  `[push] max_body_bytes` (more: 413); malformed requests are a rate-limited warning;
* optional HTTPS (`tls_cert_file`, `tls_key_file`).

It implements the receiver's `PushBackend`:

* `commit` normalises like the device workers do (`normalize_punch`, so the same punch pulled
  or pushed gets the same id), with `source = "push"`, and commits to the buffer (shielded,
  in a thread) before returning; the receiver answers `OK` only after that;
* `load_meta` / `save_meta` are the buffer's device meta;
* `contact` / `problem` feed the terminal's `DeviceHealth`, which the composition root built
  like a pulled terminal's (same faults, retained state, metrics and status);
* a terminal that sends nothing for `missed_heartbeats` × its `delay` seconds is reported as a
  failed contact (`unreachable`) every `delay` seconds until it is back, so it goes offline
  after `offline_after_failures` such reports;
* a serial number no entry claims is refused (403) or quarantined under `unknown-<serial>`
  (`[push] unknown_terminals`); either way the gateway fault `unknown_terminal` is raised once
  per serial number, naming it and its address, and cleared after `fault_hold_seconds`
  without any unknown terminal.

It owns the terminals' command queue (`commands`, `punchgate.gateway.push_commands`): loaded
from the buffer before the listener serves, handed to the receiver, closed with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from punchgate.drivers.base import DeviceInfo, RawPunch
from punchgate.drivers.config import TerminalConfig
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push import TYPE_NAME
from punchgate.drivers.zk_push.backend import Committed, PushStoreRefusedError, PushTerminal
from punchgate.drivers.zk_push.config import ZkPushTerminal
from punchgate.drivers.zk_push.receiver import RECEIVER, Receiver, build_receiver
from punchgate.gateway.faults import CATALOGUE, FaultTransition
from punchgate.gateway.http_limits import ConnectionGuard, quiet_aiohttp_loggers
from punchgate.gateway.normalize import normalize_punch
from punchgate.gateway.push_commands import PushCommandQueue
from punchgate.gateway.ratelimit_log import RateLimitedLog
from punchgate.sync.faults import GatewayFault
from punchgate.sync.records import FLAG_BEFORE_2000, FLAG_IN_FUTURE, Punch
from punchgate.sync.store import StoreRefusedError

if TYPE_CHECKING:
    from punchgate.gateway.app import Application
    from punchgate.gateway.settings import Settings

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 512  # held at once; a site has tens of terminals, each with one or two
MAX_REQUESTS = 64  # in progress at once; more get a quick 503 and retry after ErrorDelay
HEADER_TIMEOUT = 10.0  # seconds from connect to a complete request head
BODY_TIMEOUT = 60.0  # seconds to receive a declared body (4 MiB from a slow terminal link)
IDLE_TIMEOUT = 30.0  # seconds an idle kept-alive connection stays open
SHUTDOWN_TIMEOUT = 5.0  # seconds close() lets requests in progress finish (commits are shielded anyway)
BACKLOG = 128
WATCH_EVERY = 1.0  # seconds between heartbeat checks
LIVE_WINDOW = dt.timedelta(minutes=2)  # a realtime upload of a punch this fresh is "as it happened"
MAX_UNKNOWN_TRACKED = 256  # unknown serial numbers remembered (the oldest forgotten first)
MAX_QUARANTINED = 32  # unknown serial numbers stored under devices of their own; more are refused
MIN_UNKNOWN_HOLD = 60.0  # seconds unknown_terminal stays raised at least
QUARANTINE_PREFIX = "unknown-"
# Why the receiver refused a request: the `outcome` label of punchgate_push_requests_total.
REFUSALS = ("no_serial", "bad_serial", "unknown_serial", "wrong_source", "unknown_table", "store")


def push_terminals(settings: Settings) -> list[ZkPushTerminal]:
    """The enabled terminal entries the push listener serves."""
    return [t for t in settings.terminals if t.enabled and isinstance(t, ZkPushTerminal)]


def push_enabled(settings: Settings) -> bool:
    """Serve the listener? As `[push] enabled` says; by default when a zk-push terminal is configured."""
    enabled = settings.push.enabled
    return bool(push_terminals(settings)) if enabled is None else enabled


def listens_everywhere(bind: str) -> bool:
    """True for a wildcard bind address (0.0.0.0, ::): every interface, every network."""
    try:
        return ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        return False


def listener_summary(settings: Settings) -> str:
    """One line for check-config: where push terminals must send, or that nothing listens."""
    push = settings.push
    if not push_enabled(settings):
        return "push listener off"
    scheme = "https" if push.tls_cert_file is not None else "http"
    host = f"[{push.bind}]" if ":" in push.bind else push.bind
    line = (
        f"push listener {scheme}://{host}:{push.port}/iclock/ for {len(push_terminals(settings))} terminals"
    )
    if listens_everywhere(push.bind):
        line += " (WARNING: bind is a wildcard: every interface and network can reach it)"
    elif _loopback(push.bind):
        line += " (loopback only: terminals on the LAN cannot reach it; set [push] bind)"
    return line


def _loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind.lower() == "localhost"


class PushConfigError(Exception):
    """The listener cannot start as configured (its TLS files); the message says what to fix."""


def _tls_context(cert: Any, key: Any) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise PushConfigError(
            f"[push] tls_cert_file {cert} / tls_key_file {key}: cannot load the certificate and key: {exc}"
        ) from None
    return context


@dataclass
class _Unknown:
    address: str
    first: float
    last: float
    requests: int = 0


@dataclass
class _Watched:
    terminal: PushTerminal
    last_request: float  # monotonic; the start of the listener until the first request
    reported_at: float | None = None  # when silence was last reported (None: not silent)


SERVICE: web.AppKey[PushService] = web.AppKey("push_service")


class PushService:
    """The push listener and the receiver's backend; `start()`, `port`, `close()`."""

    def __init__(self, app: Application, terminals: Sequence[TerminalConfig]) -> None:
        self.app = app
        self.settings = app.settings.push
        self.terminals = [
            PushTerminal.from_config(t, app.settings.terminal_timezone(t))
            for t in terminals
            if isinstance(t, ZkPushTerminal)
        ]
        self.limited = RateLimitedLog(log)
        self.guard = ConnectionGuard(
            max_connections=MAX_CONNECTIONS, header_timeout=HEADER_TIMEOUT, limited=self.limited
        )
        self.in_flight = 0
        self.receiver: Receiver | None = None
        self._watched: dict[str, _Watched] = {}
        self._unknown: OrderedDict[str, _Unknown] = OrderedDict()
        self._quarantined: dict[str, PushTerminal] = {}
        self._disabled = {  # serial number -> name of a zk-push entry with enabled = false
            t.serial_number: t.name
            for t in app.settings.terminals
            if isinstance(t, ZkPushTerminal) and not t.enabled
        }
        self._runner: web.AppRunner | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.commands = PushCommandQueue(self.terminals, load=self.load_meta, save=self.save_meta)

    @property
    def port(self) -> int:
        assert self._runner is not None
        port: int = self._runner.addresses[0][1]
        return port

    # --- the listener ------------------------------------------------------------------------
    async def start(self) -> None:
        push = self.settings
        context = _tls_context(push.tls_cert_file, push.tls_key_file)
        outer = web.Application(
            client_max_size=push.max_body_bytes, middlewares=[_plain_answers, _bounded_work, _bounded_body]
        )
        outer[SERVICE] = self
        await self.commands.load()
        receiver_app = build_receiver(self.terminals, self, command_source=self.commands)
        self.receiver = receiver_app[RECEIVER]
        outer.add_subapp("/iclock/", receiver_app)
        runner = web.AppRunner(
            outer,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=IDLE_TIMEOUT,
            lingering_time=0,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        assert runner.server is not None
        self.guard.install(runner.server)
        quiet_aiohttp_loggers(self.limited)
        try:
            await web.TCPSite(runner, push.bind, push.port, backlog=BACKLOG, ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        now = time.monotonic()
        self._watched = {t.name: _Watched(t, now) for t in self.terminals}
        self._watch_task = asyncio.create_task(self._watch(), name="push-watch")
        self.commands.start()
        log.info(
            "push_listening",
            bind=push.bind,
            port=self.port,
            tls=context is not None,
            terminals=len(self.terminals),
            unknown_terminals=push.unknown_terminals,
        )
        if listens_everywhere(push.bind):
            log.warning(
                "push_listening_on_every_interface",
                bind=push.bind,
                advice="set [push] bind to the gateway's LAN address so only that network can reach it",
            )

    async def close(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.commands.close()
        self.limited.flush()
        if self.receiver is not None:
            log.info("push_stopped", **{k: v for k, v in sorted(self.receiver.counts.items())})

    def metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The listener's counters for /metrics (gateway/metrics.py); docs/health.md lists them."""
        counts = self.receiver.counts if self.receiver is not None else Counter[str]()
        requests = CounterMetricFamily(
            "punchgate_push_requests",
            "requests to the push listener by outcome (accepted, or why refused)",
            labels=["outcome"],
        )
        requests.add_metric(["accepted"], counts["requests"])
        for outcome in REFUSALS:
            requests.add_metric([outcome], counts[f"refused_{outcome}"])
        yield requests
        for key, help_text in (
            ("punches_received", "punches in accepted ATTLOG uploads, new or already stored"),
            ("unparsed_lines", "uploaded lines that could not be read (kept aside, protocol_error)"),
            ("photos", "attendance photos answered and not kept"),
            ("biometric_lines", "fingerprint and face template lines counted and not kept"),
        ):
            yield CounterMetricFamily(f"punchgate_push_{key}", help_text, value=counts[key])
        yield from self.commands.metrics()

    # --- PushBackend -------------------------------------------------------------------------
    async def commit(
        self, terminal: PushTerminal, punches: Sequence[RawPunch], *, received_at: dt.datetime
    ) -> Committed:
        app = self.app
        store, forwarder = app.store, app.forwarder
        if store is None or forwarder is None:
            raise PushStoreRefusedError("the gateway is starting")
        if not punches:
            return Committed(new=0, received=0)

        def normalize_and_store() -> tuple[list[Punch], list[str]]:
            normalized = _normalized(terminal, punches, received_at)
            return normalized, store.add_punches(normalized)

        try:
            # In a thread: a large upload costs seconds of CPU the event loop must not wait for.
            # Shielded: a shutdown that cancels the request mid-commit still lets the commit finish.
            normalized, inserted = await asyncio.shield(asyncio.to_thread(normalize_and_store))
        except StoreRefusedError as exc:
            if exc.stored:
                forwarder.notify_new_punches()
            raise PushStoreRefusedError(str(exc), stored=len(exc.stored)) from exc
        health = app.devices.get(terminal.name)
        if health is not None:
            health.punches_stored(max(p.utc_time for p in normalized))
            health.read_done(count=len(normalized), new=len(inserted))
        if inserted:
            forwarder.notify_new_punches()
            new_ids = set(inserted)
            bad = [
                p for p in normalized if p.id in new_ids and {FLAG_BEFORE_2000, FLAG_IN_FUTURE} & set(p.flags)
            ]
            if bad and health is not None:
                health.set_fault(
                    DeviceFault.CLOCK_INVALID,
                    True,
                    f"{len(bad)} punches with impossible times (e.g. {bad[0].local_time})",
                )
        return Committed(new=len(inserted), received=len(normalized))

    async def load_meta(self, key: str) -> dict[str, Any]:
        store = self.app.store
        if store is None:
            raise PushStoreRefusedError("the gateway is starting")
        return await asyncio.to_thread(store.get_device_meta, key)

    async def save_meta(self, key: str, data: dict[str, Any]) -> None:
        store = self.app.store
        if store is None:
            raise PushStoreRefusedError("the gateway is starting")
        await asyncio.shield(asyncio.to_thread(store.set_device_meta, key, data))

    def contact(self, terminal: PushTerminal, info: DeviceInfo) -> None:
        watched = self._watched.get(terminal.name)
        if watched is not None:
            watched.last_request = time.monotonic()
            if watched.reported_at is not None:
                watched.reported_at = None
                log.info("push_terminal_back", device=terminal.name)
        health = self.app.devices.get(terminal.name)
        if health is not None and not terminal.quarantined:
            health.contact_ok(info, drift_seconds=None)

    def problem(self, terminal: PushTerminal, fault: DeviceFault, detail: str) -> None:
        health = self.app.devices.get(terminal.name)
        if health is None or terminal.quarantined:
            self.limited.warning(
                "push_problem", key=f"push_problem:{fault}", device=terminal.name, detail=detail
            )
            return
        health.set_fault(fault, True, detail)

    def unknown_terminal(self, serial_number: str, address: str) -> PushTerminal | None:
        if serial_number in self._disabled:  # configured, and switched off: refused, not unknown
            self.limited.info(
                "push_terminal_disabled", key="push_terminal_disabled", device=self._disabled[serial_number]
            )
            return None
        now = time.monotonic()
        entry = self._unknown.get(serial_number)
        first = entry is None
        if entry is None:
            while len(self._unknown) >= MAX_UNKNOWN_TRACKED:
                self._unknown.popitem(last=False)
            entry = self._unknown[serial_number] = _Unknown(address, now, now)
        entry.last, entry.address = now, address
        entry.requests += 1
        terminal = (
            self._quarantine(serial_number) if self.settings.unknown_terminals == "quarantine" else None
        )
        if first:
            self._raise_unknown(serial_number, address, terminal)
        else:
            self.limited.warning(
                "unknown_terminal_request",
                key="unknown_terminal_request",
                serial=serial_number,
                address=address,
                outcome="quarantined" if terminal is not None else "refused",
            )
        return terminal

    # --- unknown serial numbers ----------------------------------------------------------------
    def _quarantine(self, serial_number: str) -> PushTerminal | None:
        terminal = self._quarantined.get(serial_number)
        if terminal is not None:
            return terminal
        name = QUARANTINE_PREFIX + serial_number
        taken = {t.name for t in self.app.settings.terminals}
        if name in taken or len(self._quarantined) >= MAX_QUARANTINED:
            return None
        terminal = PushTerminal(
            name=name, serial_number=serial_number, timezone=self.app.settings.timezone, quarantined=True
        )
        self._quarantined[serial_number] = terminal
        return terminal

    def _raise_unknown(self, serial_number: str, address: str, quarantined: PushTerminal | None) -> None:
        outcome = (
            f"its punches are stored under device {quarantined.name}"
            if quarantined is not None
            else "its uploads are refused and it keeps its records"
        )
        detail = (
            f"a push terminal with serial number {serial_number} at {address} is not in the config: "
            f"{outcome}; add a zk-push terminal with this serial_number"
        )
        log.warning("unknown_terminal", serial=serial_number, address=address, detail=detail)
        faults = self.app.gateway_faults
        code = GatewayFault.UNKNOWN_TERMINAL
        if code not in faults.active:
            faults.raise_fault(code, detail)
            return
        # Already raised for another serial number: a raised event for this one too (once per
        # serial number), while the fault itself stays one active fault.
        faults.raise_fault(code, detail)  # the active fault now names the latest one
        transition = FaultTransition("", code, True, CATALOGUE[code].severity, detail, faults.clock())
        for listener in faults.on_transition:
            try:
                listener(transition)
            except Exception:
                log.exception("fault_listener_failed", code=code)

    def _forget_unknown(self, now: float) -> None:
        faults = self.app.gateway_faults
        code = GatewayFault.UNKNOWN_TERMINAL
        if code not in faults.active:
            return
        hold = max(MIN_UNKNOWN_HOLD, self.app.settings.health.fault_hold_seconds)
        if any(now - entry.last < hold for entry in self._unknown.values()):
            return
        self._unknown.clear()
        faults.clear_fault(code, f"no unknown push terminal for {hold:g} s")

    # --- heartbeats --------------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            try:
                now = time.monotonic()
                for watched in self._watched.values():
                    self._check_heartbeat(watched, now)
                self._forget_unknown(now)
            except Exception:  # a bug here must not end the watch: terminals would never go offline
                self.limited.error("push_watch_failed", key="push_watch_failed", exc_info=True)
            await asyncio.sleep(WATCH_EVERY)

    def _check_heartbeat(self, watched: _Watched, now: float) -> None:
        """Report a terminal silent for `missed_heartbeats` × its delay, again every delay."""
        missed, delay = self.settings.missed_heartbeats, watched.terminal.delay
        silent = now - watched.last_request
        if silent <= missed * delay:
            return
        if watched.reported_at is not None and now - watched.reported_at < delay:
            return
        name = watched.terminal.name
        if watched.reported_at is None:
            log.warning("push_terminal_silent", device=name, seconds=round(silent), delay=delay)
        watched.reported_at = now
        health = self.app.devices.get(name)
        if health is not None:
            health.contact_failed(
                DeviceFault.UNREACHABLE,
                f"no request from the terminal for {silent:.0f} s (it should ask every {delay} s; "
                f"unreachable after {missed} missed): check its power, network and ADMS server setting",
            )


def _normalized(terminal: PushTerminal, punches: Sequence[RawPunch], received_at: dt.datetime) -> list[Punch]:
    """The punches as the device workers normalise theirs (so the ids match), source push."""
    zone = ZoneInfo(terminal.timezone)
    normalized: list[Punch] = []
    for raw in punches:
        punch = normalize_punch(
            raw,
            device=terminal.name,
            serial_number=terminal.serial_number,
            zone=zone,
            source="push",
            historical=True,
            driver_type=TYPE_NAME,
            now=received_at,
        )
        # A fresh punch uploaded in real time was seen as it happened; anything else is backlog.
        live = terminal.realtime and received_at - punch.utc_time <= LIVE_WINDOW
        normalized.append(dataclasses.replace(punch, historical=False) if live else punch)
    return normalized


# --- middlewares ---------------------------------------------------------------------------------


@web.middleware
async def _plain_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as one short text line; a handler that fails is a 500 and one rate-limited log line."""
    service = request.app[SERVICE]
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = (
            exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else f"{exc.reason.lower()}\n"
        )
        response = web.Response(status=exc.status, text=text, content_type="text/plain")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:
        service.limited.error(
            "push_handler_failed",
            key=f"push_handler_failed:{type(exc).__name__}",
            path=request.path,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=True,
        )
        response = web.Response(status=500, text="internal error\n", content_type="text/plain")
    response.force_close()  # after an error, start afresh
    return response


@web.middleware
async def _bounded_work(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks the connection busy (the guard never pushes it out) and caps requests in progress."""
    service = request.app[SERVICE]
    service.guard.request_started(request.protocol)
    try:
        if service.in_flight >= MAX_REQUESTS:
            service.limited.warning("push_busy", key="push_busy", limit=MAX_REQUESTS, path=request.path)
            response = web.Response(
                status=503, text="busy: too many requests at once; try again\n", content_type="text/plain"
            )
            response.headers["Retry-After"] = "5"
            response.force_close()
            return response
        service.in_flight += 1
        try:
            return await handler(request)
        finally:
            service.in_flight -= 1
    finally:
        service.guard.request_finished(request.protocol)


@web.middleware
async def _bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 for a body over the limit (declared or not), 408 for one that does not arrive in time.
    Read here, before any handler runs; it stays cached for request.read()."""
    if request.body_exists:
        limit = request.client_max_size
        declared = request.content_length
        if declared is not None and declared > limit:
            raise web.HTTPRequestEntityTooLarge(limit, declared)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"the body did not arrive within {BODY_TIMEOUT:g} s\n"
            ) from None
    return await handler(request)
