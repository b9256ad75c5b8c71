"""The gateway-level checks, once a second: buffer limits, broker reachability, delivery delay,
confirmations (central mode), and the one-line status systemd shows.

They raise and clear the gateway's own faults (`Application.gateway_faults`); device faults are
each `DeviceHealth`'s. Kept apart from `app.py` so the composition root only wires them in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING

from punchgate.gateway import __version__
from punchgate.sync.faults import GatewayFault

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

GATEWAY_CHECK_EVERY = 1.0  # seconds between checks of the buffer and broker
BROKER_FAULT_AFTER = 3.0  # seconds without a broker connection before broker_unreachable


async def gateway_checks(app: Application) -> None:
    """Gateway-level faults: buffer limits and broker reachability, checked periodically."""
    assert app.store is not None and app.forwarder is not None
    while True:
        app.loop_heartbeat = time.monotonic()
        store_faults = await asyncio.to_thread(app.store.active_faults)
        for code in (GatewayFault.BUFFER_FULL, GatewayFault.DISK_LOW):
            app.gateway_faults.set(code, code in store_faults, store_fault_detail(app, code))
        check_broker(app)
        await check_delivery_delay(app)
        await check_confirmations(app)
        report_status(app)
        await asyncio.sleep(GATEWAY_CHECK_EVERY)


def report_status(app: Application) -> None:
    """A one-line summary for `systemctl status`, sent to systemd when it changes."""
    assert app.store is not None and app.forwarder is not None
    counted = app._terminals_line
    if counted is None or counted[0] != len(app.devices):
        states = Counter(health.status.value for health in app.devices.values())
        line = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no terminals"
        app._terminals_line = counted = (len(app.devices), line)
    terminals = counted[1]
    broker = "broker connected" if app.forwarder.connected else "broker NOT connected"
    faults = ", ".join(sorted(app.gateway_faults.active)) or "no gateway faults"
    line = f"{terminals}; {broker}; {app.store.pending_count()} pending; {faults}"
    if line != app._last_status:
        app._last_status = line
        app.notifier.status(line)


def check_broker(app: Application) -> None:
    """broker_unreachable once the broker has been away for a moment, not at every blip
    (and not in the first instant after start, before the first connect completes)."""
    assert app.forwarder is not None
    now = time.monotonic()
    if app.forwarder.connected:
        app._broker_lost_at = None
    elif app._broker_lost_at is None:
        app._broker_lost_at = now
    away = app._broker_lost_at is not None and now - app._broker_lost_at >= BROKER_FAULT_AFTER
    app.gateway_faults.set(
        GatewayFault.BROKER_UNREACHABLE, away, app.forwarder.stats.last_error or "not connected"
    )


async def check_delivery_delay(app: Application) -> None:
    assert app.store is not None and app.forwarder is not None
    limit = app.settings.health.max_pending_age_seconds
    # Central delivery: a punch sent and waiting for its confirmation is confirmation_delayed's.
    oldest = app.store.oldest_pending_age if app.forwarder.central is None else app.store.oldest_unsent_age
    age = await asyncio.to_thread(oldest)
    late = bool(limit) and age is not None and age > limit
    detail = f"oldest undelivered punch waits {age or 0:.0f} s (limit {limit:g} s)"
    app.gateway_faults.set(GatewayFault.DELIVERY_DELAYED, late, detail)


async def check_confirmations(app: Application) -> None:
    """Central delivery: confirmation_delayed, and the retained gateway state's figures."""
    assert app.forwarder is not None
    central = app.forwarder.central
    if central is None:
        return
    figures = await asyncio.to_thread(central.figures)
    limit = app.settings.mqtt.max_unconfirmed_age
    age = figures["oldest_unconfirmed_age_seconds"]
    late = bool(limit) and age is not None and age > limit
    detail = (
        f"{figures['unconfirmed']} punches sent and not confirmed by central; the oldest was stored "
        f"{age or 0:.0f} s ago (limit {limit:g} s)"
    )
    app.gateway_faults.set(GatewayFault.CONFIRMATION_DELAYED, late, detail)
    state = central.gateway_state(figures, version=__version__, started_at=app.forwarder.started_at)
    if state is not None:
        app.forwarder.publish_retained(app.forwarder.topics.gateway_state, state)


def store_fault_detail(app: Application, code: str) -> str:
    buffer = app.settings.buffer
    if code == GatewayFault.BUFFER_FULL:
        return f"{buffer.max_pending} undelivered punches; terminals are not read until the buffer drains"
    return f"less than {buffer.min_free_disk_mb} MB free for {buffer.path}; terminals are not read"
