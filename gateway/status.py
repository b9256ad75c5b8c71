"""The gateway's health as data: shared by /api/devices, the status page, /healthz and `punchgate status`.

These functions run in a worker thread (they query the store); they only read the
application's state, never change it. What they return is ready for `json.dumps`: every
timestamp is a string in the same ISO 8601 UTC form with `Z` as in the MQTT payloads
(`punchgate.sync.contract.utc_iso`), so `/api/devices` and `punchgate status --json` match them.

`devices_json` is /api/devices's body: the text `json.dumps(gateway_status(app), default=str)`
gives, with each terminal's part kept as JSON text and made again only when a value it shows
changed (issue 18: 500 terminals' views built, converted and encoded on every request took
about 20 ms).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from punchgate.sync.contract import utc_iso
from punchgate.sync.faults import GatewayFault

if TYPE_CHECKING:
    from punchgate.gateway.app import Application
    from punchgate.gateway.health import DeviceHealth

LOOP_STALL_SECONDS = 30.0  # the gateway-check task ticks every few seconds; much longer means a stall


def json_ready(value: Any) -> Any:
    """`value` with every datetime inside (dicts, lists, tuples) rendered by `utc_iso`."""
    if isinstance(value, dt.datetime):
        return utc_iso(value)
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def gateway_status(app: Application) -> dict[str, Any]:
    """The whole status as /api/devices serves it (JSON-ready, see the module docstring)."""
    store = app.store
    pending_by_device = store.pending_devices() if store is not None else {}
    devices = []
    for name, health in app.devices.items():
        view = health.api_view()
        view["pending"] = pending_by_device.get(name, 0)
        devices.append(view)
    status = {"gateway": _gateway_part(app, pending_by_device), "devices": devices}
    return dict(json_ready(status))


def _gateway_part(app: Application, pending_by_device: dict[str, int]) -> dict[str, Any]:
    store = app.store
    forwarder = app.forwarder
    clock = app.gateway_clock.status()
    central = app.settings.mqtt.delivery == "central"
    return {
        "gateway_id": app.settings.gateway_id,
        "site": app.settings.site,
        "started_at": app.started_at,
        "broker_connected": bool(forwarder and forwarder.connected),
        "pending": sum(pending_by_device.values()),
        "oldest_pending_age_seconds": store.oldest_pending_age() if store is not None else None,
        # Central delivery: sent and waiting for central's confirmation (0 / None in broker mode).
        "delivery": app.settings.mqtt.delivery,
        "unconfirmed": store.unconfirmed_count() if central and store is not None else 0,
        "oldest_unconfirmed_age_seconds": (
            store.oldest_unconfirmed_age() if central and store is not None else None
        ),
        "faults": [f.as_dict() for f in app.gateway_faults.active.values()],
        "clock_synchronised": clock.synchronised,
        "clock_sync_source": clock.source,
        "healthy": health_verdict(app)[0],
    }


def _view_key(health: DeviceHealth) -> tuple[Any, ...]:
    """Every value `DeviceHealth.api_view` shows (its name aside): equal keys, equal views.
    Faults and the terminal's info are immutable values, replaced when they change."""
    return (
        health.status,
        tuple(health.faults.active.values()),
        health.last_contact,
        health.last_error,
        health.clock_drift_seconds,
        health.info,
        health.last_punch_at,
        health.consecutive_failures,
        health.failures_total,
        health.reads_total,
        health.punches_new_total,
        health.clock_corrections_total,
    )


class _DeviceTexts:
    """Each terminal's api_view as JSON text without its closing brace (`pending` goes there),
    with the key it was made from."""

    def __init__(self) -> None:
        self.texts: dict[str, tuple[tuple[Any, ...], str]] = {}
        # Requests run on the API's threads; one at a time keeps the cache simple (each takes ms).
        self.lock = threading.Lock()

    def parts(self, app: Application) -> tuple[list[tuple[str, str, int]], dict[str, Any]]:
        """(name, JSON text without its closing brace, pending) of each terminal in config
        order, and the gateway's part (JSON-ready): what /api/devices and /api/status.txt show."""
        with self.lock:
            store = app.store
            pending_by_device = store.pending_devices() if store is not None else {}
            cached, fresh, parts = self.texts, {}, []
            for name, health in app.devices.items():
                key = _view_key(health)
                entry = cached.get(name)
                if entry is None or entry[0] != key:
                    entry = (key, json.dumps(json_ready(health.api_view()), default=str)[:-1])
                fresh[name] = entry
                parts.append((name, entry[1], pending_by_device.get(name, 0)))
            self.texts = fresh  # terminals gone from the config drop out here
            gateway = json_ready(_gateway_part(app, pending_by_device))
        return parts, gateway

    def body(self, app: Application) -> bytes:
        parts, gateway = self.parts(app)
        devices = ", ".join(f'{text}, "pending": {pending}}}' for _name, text, pending in parts)
        return f'{{"gateway": {json.dumps(gateway, default=str)}, "devices": [{devices}]}}'.encode()


_device_texts: weakref.WeakKeyDictionary[Application, _DeviceTexts] = weakref.WeakKeyDictionary()
_device_texts_lock = threading.Lock()


def _texts(app: Application) -> _DeviceTexts:
    with _device_texts_lock:
        texts = _device_texts.get(app)
        if texts is None:
            texts = _device_texts[app] = _DeviceTexts()
    return texts


def devices_json(app: Application) -> bytes:
    """GET /api/devices's body: `json.dumps(gateway_status(app), default=str)`, encoded."""
    return _texts(app).body(app)


def device_parts(app: Application) -> tuple[list[tuple[str, str, int]], dict[str, Any]]:
    """/api/devices's body in parts (`_DeviceTexts.parts`), for `punchgate.gateway.status_text`."""
    return _texts(app).parts(app)


def health_verdict(app: Application) -> tuple[bool, str]:
    """(healthy, reason) for /healthz: the loop, the store and the forwarder are alive."""
    stalled = time.monotonic() - app.loop_heartbeat
    if stalled > LOOP_STALL_SECONDS:
        return False, f"event loop stalled: no gateway check for {stalled:.0f} s"
    if app.store is None or app.forwarder is None:
        return False, "starting"
    try:
        app.store.pending_count()
    except Exception as exc:
        return False, f"buffer unusable: {type(exc).__name__}: {exc}"
    if not app.forwarder_alive():
        return False, "forwarder task is not running"
    broker = app.gateway_faults.active.get(GatewayFault.BROKER_UNREACHABLE)
    grace = app.settings.health.broker_grace_seconds
    if broker is not None and (dt.datetime.now(dt.UTC) - broker.since).total_seconds() > grace:
        return False, f"broker unreachable for more than {grace:g} s: {broker.detail}"
    return True, "ok"
