"""Each terminal's parts, built at start-up: its health model and, for a pulled terminal, its worker.

A pulled terminal gets a `DeviceWorker` (the only thing that talks to it) and a `DeviceHealth`;
a push terminal uploads to the [push] listener, so it gets the health model only. Kept apart
from `app.py` so the composition root reads as the order things start in.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import structlog

from punchgate.drivers.config import TerminalConfig
from punchgate.drivers.registry import create_driver
from punchgate.drivers.zk_push import is_push_terminal
from punchgate.gateway.clock import ClockCare, CorrectionPolicy
from punchgate.gateway.health import DeviceHealth, Thresholds, calendar_for
from punchgate.gateway.roster import roster_key
from punchgate.gateway.worker import DeviceWorker
from punchgate.gateway.worker_known_log import reconcile_polls_for

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

# The composition root's logger: these lines are its, wherever the code sits.
log = structlog.get_logger("punchgate.gateway.app")

# After start-up, first contacts come this far apart on average (up to one poll interval in
# all): a restarted fleet reads its terminals at a pace the gateway keeps up with instead of
# all at once, and each terminal is contacted within one poll interval. A first read of a
# realistic log (a few thousand records, all normalised and checked once after a restart)
# costs a tenth of a second or more of CPU; 0.25 s apart keeps that under half a core.
STARTUP_SPACING_SECONDS = 0.25


def start_terminals(app: Application) -> None:
    """Build every enabled terminal's parts and start each pulled terminal's worker."""
    settings = app.settings
    pulled = sum(1 for t in settings.terminals if t.enabled and not is_push_terminal(t))
    assert app.store is not None
    # Every terminal's meta and roster date in one query: 5,000 workers each asking for their
    # own (two queries and two thread hops each) took a fifth of a restart's first interval.
    stored = app.store.all_device_meta() if pulled else {}
    for terminal in settings.terminals:
        if not terminal.enabled:
            log.info("terminal_disabled_in_config", device=terminal.name)
            continue
        if is_push_terminal(terminal):  # it uploads to the [push] listener: health, no worker
            add_push_terminal(app, terminal)
            continue
        worker = build_worker(app, terminal)
        worker.stored_meta = stored.get(terminal.name, {})
        roster_at = stored.get(roster_key(terminal.name), {}).get("refreshed_at")
        worker.stored_roster = {"refreshed_at": roster_at} if roster_at is not None else {}
        # Each worker polls on its own timer with its own phase within the interval, so a
        # fleet does not poll together; its first contact comes at the same point of the
        # start-up spread (as long as the fleet needs, at most one interval).
        interval = terminal.poll_interval
        phase = random.uniform(0, interval)
        worker.place_on_grid(
            phase=phase, first_poll_in=phase * min(1.0, pulled * STARTUP_SPACING_SECONDS / interval)
        )
        app._worker_tasks.append(asyncio.create_task(worker.run(), name=f"worker:{terminal.name}"))


def build_worker(app: Application, terminal: TerminalConfig) -> DeviceWorker:
    assert app.store is not None and app.forwarder is not None
    health_settings = app.settings.terminal_health(terminal)
    timezone = app.settings.terminal_timezone(terminal)
    health = DeviceHealth(
        terminal.name,
        Thresholds.from_settings(app.settings.terminal_health(terminal)),
        calendar=calendar_for(health_settings, timezone),
    )
    health.faults.on_transition.append(app._publish_transition)
    health.on_change.append(app._publish_device_state)
    health.on_counts_only.append(app._publish_if_counts_moved)
    health.on_notice.append(app._publish_notice)
    clock_care = ClockCare(
        CorrectionPolicy(
            health_settings.clock_correct_min_seconds, health_settings.clock_correct_max_seconds
        ),
        app.gateway_clock,
    )
    app.devices[terminal.name] = health
    worker = DeviceWorker(
        terminal=terminal,
        driver=create_driver(terminal),
        store=app.store,
        sink=app.forwarder,
        health=health,
        timezone=timezone,
        driver_type=str(getattr(terminal, "type", "")),
        clear_log=bool(getattr(terminal, "clear_log", False)),
        clock_care=clock_care if clock_care.policy.enabled else None,
        reconcile_polls=reconcile_polls_for(terminal.full_read_every, terminal.poll_interval),
        commits=app.commits,
    )
    app.workers[terminal.name] = worker
    return worker


def add_push_terminal(app: Application, terminal: TerminalConfig) -> None:
    """A push terminal's health model, built like a pulled terminal's; gateway/push.py feeds it."""
    health_settings = app.settings.terminal_health(terminal)
    health = DeviceHealth(
        terminal.name,
        Thresholds.from_settings(health_settings),
        calendar=calendar_for(health_settings, app.settings.terminal_timezone(terminal)),
    )
    health.faults.on_transition.append(app._publish_transition)
    health.on_change.append(app._publish_device_state)
    health.on_counts_only.append(app._publish_if_counts_moved)
    health.on_notice.append(app._publish_notice)
    app.devices[terminal.name] = health
