"""What the gateway tells central besides punches: retained device states, fault and notice
events, and the audit chain's head (with the `config_loaded` entry each start records).

Every change the health models report comes through here: it is counted for `/metrics` and
the console, and published through the forwarder. Kept apart from `app.py` so the composition
root only wires the callbacks in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

from punchgate.gateway.faults import FaultTransition, Notice
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.settings import Settings
from punchgate.sync.audit import Head
from punchgate.sync.contract import AuditHead, DeviceEvent, DeviceState, count_moved, publish_due

if TYPE_CHECKING:
    from punchgate.gateway.app import Application


# --- health publishing ---------------------------------------------------------------------
def device_state(app: Application, health: DeviceHealth) -> DeviceState:
    return DeviceState.model_validate(
        {**health.snapshot(), "gateway": app.settings.gateway_id, "as_of": dt.datetime.now(dt.UTC)}
    )


def publish_device_state(app: Application, health: DeviceHealth, *, refresh: bool = False) -> None:
    """The retained state, on change only (`sync.contract.publish_due`); `refresh` sends it anyway."""
    if app.forwarder is None:
        return
    state = device_state(app, health)
    if refresh or publish_due(app._published_states.get(health.name), state):
        app._published_states[health.name] = state
        app.forwarder.publish_device_state(health.name, state)


def publish_if_counts_moved(app: Application, health: DeviceHealth) -> None:
    """Nothing but the counts may have moved since the last change (`DeviceHealth.on_counts_only`):
    the state goes out only when they moved as far as the contract says (`count_moved`),
    checked on the last published state without building the new one."""
    published, info = app._published_states.get(health.name), health.info
    moved = (
        published is None
        or info is None
        or count_moved(published.record_count, info.record_count, info.record_capacity)
        or count_moved(published.user_count, info.user_count, info.user_capacity)
    )
    if moved:
        publish_device_state(app, health)


def republish_device_states(app: Application) -> None:
    """Each published terminal state again, with a fresh `as_of`: every STATE_REFRESH_SECONDS
    and on every connect, so a consumer can tell a live state from one a stopped gateway left
    behind. Terminals not reported on yet stay unpublished (no `offline` flap at start-up)."""
    for health in app.devices.values():
        if health.name in app._published_states:
            publish_device_state(app, health, refresh=True)


def publish_transition(app: Application, transition: FaultTransition) -> None:
    direction = "raised" if transition.raised else "cleared"
    app.fault_transitions[(transition.device, transition.code, direction)] += 1
    app.fault_history.append(transition)
    if app.forwarder is None:
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
        app.forwarder.publish_event(transition.device, event)
    else:
        app.forwarder.publish_gateway_event(event)


def publish_notice(app: Application, notice: Notice) -> None:
    if app.forwarder is None:
        return
    event = DeviceEvent(
        device=notice.device,
        event=notice.event,
        code=notice.code,
        severity=notice.severity.value,
        detail=notice.detail,
        time=notice.at,
    )
    app.forwarder.publish_event(notice.device, event)


# --- the audit chain (docs/audit.md) ---------------------------------------------------------
async def start_audit(app: Application) -> None:
    """Publish the chain's head after every administrative action, and record the config
    this start runs with (what changed since the last start)."""
    assert app.store is not None
    loop = asyncio.get_running_loop()

    def published(head: Head) -> None:  # called in the committing thread
        loop.call_soon_threadsafe(app._publish_audit_head, head)

    app.store.on_audit_action.append(published)
    entry = await asyncio.to_thread(config_entry, app.settings, app.store.last_audit_entry("config_loaded"))
    await asyncio.to_thread(app.store.audit_action, "config_loaded", entry)


def publish_audit_head(app: Application, head: Head | None) -> None:
    if app.forwarder is None or head is None:
        return
    app.forwarder.publish_audit_head(
        AuditHead(
            gateway=app.settings.gateway_id,
            seq=head.seq,
            hash=head.hash,
            kind=head.kind,
            at=dt.datetime.fromisoformat(head.at.replace("Z", "+00:00")),
            as_of=dt.datetime.now(dt.UTC),
        )
    )


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
