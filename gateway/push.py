"""The listener push terminals upload to: `PushService`.

`PushService` serves the zk-push receiver (`punchgate.drivers.zk_push.receiver`) on its own
aiohttp listener, from the `[push]` section: it faces the LAN (the loopback API in
`gateway/http.py` does not), so it is a separate socket with its own limits:

* at most `MAX_CONNECTIONS` connections, a request head within `HEADER_TIMEOUT` and a body
  within `BODY_TIMEOUT` (`http_limits.ConnectionGuard`, as the API uses), at most
  `MAX_REQUESTS` requests in progress (more: 503, the terminal retries), bodies up to
  `[push] max_body_bytes` (more: 413); malformed requests are a rate-limited warning
  (`push_middleware`);
* optional HTTPS (`tls_cert_file`, `tls_key_file`; `push_listener_config`).

It wires the parts together and runs them with the listener:

* `push_backend`: the receiver's `PushBackend` (commits to the buffer, device meta, health);
* `push_heartbeats`: a terminal that stops asking goes `unreachable`, then offline;
* `push_unknown`: serial numbers no entry claims (refused or quarantined, `unknown_terminal`);
* the terminals' command queue (`commands`, `punchgate.gateway.push_commands`): loaded from
  the buffer before the listener serves, handed to the receiver, closed with it.

`push_terminals`, `push_enabled` and `listener_summary` (`push_listener_config`) are
importable from here too.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from punchgate.drivers.config import TerminalConfig
from punchgate.drivers.zk_push.backend import PushTerminal
from punchgate.drivers.zk_push.config import ZkPushTerminal
from punchgate.drivers.zk_push.receiver import RECEIVER, Receiver, build_receiver
from punchgate.gateway.http_limits import ConnectionGuard, quiet_aiohttp_loggers
from punchgate.gateway.push_backend import GatewayPushBackend
from punchgate.gateway.push_commands import PushCommandQueue
from punchgate.gateway.push_heartbeats import HeartbeatWatch
from punchgate.gateway.push_listener_config import (
    listener_summary,
    listens_everywhere,
    push_enabled,
    push_terminals,
    tls_context,
)
from punchgate.gateway.push_middleware import LIMITS, MIDDLEWARES, RequestLimits
from punchgate.gateway.push_unknown import UnknownTerminals
from punchgate.gateway.ratelimit_log import RateLimitedLog

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

# push_terminals, push_enabled and listener_summary were defined here before the split
# (now push_listener_config.py); importers still find them here.
__all__ = ["PushService", "listener_summary", "push_enabled", "push_terminals"]

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 512  # held at once; a site has tens of terminals, each with one or two
MAX_REQUESTS = 64  # in progress at once; more get a quick 503 and retry after ErrorDelay
HEADER_TIMEOUT = 10.0  # seconds from connect to a complete request head
BODY_TIMEOUT = 60.0  # seconds to receive a declared body (4 MiB from a slow terminal link)
IDLE_TIMEOUT = 30.0  # seconds an idle kept-alive connection stays open
SHUTDOWN_TIMEOUT = 5.0  # seconds close() lets requests in progress finish (commits are shielded anyway)
BACKLOG = 128
WATCH_EVERY = 1.0  # seconds between heartbeat checks
# Why the receiver refused a request: the `outcome` label of punchgate_push_requests_total.
REFUSALS = ("no_serial", "bad_serial", "unknown_serial", "wrong_source", "unknown_table", "store")


class PushService:
    """The push listener; `start()`, `port`, `close()`, `metrics()`."""

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
        self.receiver: Receiver | None = None
        self.heartbeats = HeartbeatWatch(app, missed_heartbeats=self.settings.missed_heartbeats)
        self.unknown = UnknownTerminals(app, self.limited)
        self.backend = GatewayPushBackend(
            app, limited=self.limited, heartbeats=self.heartbeats, unknown=self.unknown
        )
        self._runner: web.AppRunner | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.commands = PushCommandQueue(
            self.terminals, load=self.backend.load_meta, save=self.backend.save_meta
        )

    @property
    def port(self) -> int:
        assert self._runner is not None
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self) -> None:
        push = self.settings
        context = tls_context(push.tls_cert_file, push.tls_key_file)
        outer = web.Application(client_max_size=push.max_body_bytes, middlewares=MIDDLEWARES)
        outer[LIMITS] = RequestLimits(
            self.guard, self.limited, max_requests=MAX_REQUESTS, body_timeout=BODY_TIMEOUT
        )
        await self.commands.load()
        receiver_app = build_receiver(self.terminals, self.backend, command_source=self.commands)
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
        self.heartbeats.begin(self.terminals)
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
        if self.receiver is not None:
            try:
                await self.receiver.flush()
            except Exception:  # a stamp saved late costs a re-upload, never a punch: stop anyway
                log.warning("push_stamps_not_saved", exc_info=True)
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

    async def _watch(self) -> None:
        """Every WATCH_EVERY seconds: silent terminals reported, unknown_terminal cleared when quiet."""
        while True:
            try:
                now = time.monotonic()
                self.heartbeats.check(now)
                self.unknown.forget_when_quiet(now)
            except Exception:  # a bug here must not end the watch: terminals would never go offline
                self.limited.error("push_watch_failed", key="push_watch_failed", exc_info=True)
            await asyncio.sleep(WATCH_EVERY)
