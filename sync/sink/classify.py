"""What a message of the punch stream is: its topic and payload as a validated database `Item`.

A payload that fails its consumer schema (`validate.py`), or whose topic names another gateway
or terminal than the payload, becomes a `DeadLetter` with the reason; an empty payload (a
retained message being cleared) is nothing at all.
"""

from __future__ import annotations

from punchgate.sync.sink.items import DeadLetter, DeviceState, Digests, Event, GatewayState, Item, PunchBatch
from punchgate.sync.sink.validate import Invalid, Validators


def classify(topic: str, payload: bytes, *, prefix: str, validators: Validators) -> Item | None:
    """What a message is, validated; a DeadLetter when it is not valid; None when empty."""
    if not payload:
        return None
    head = prefix + "/"
    parts = topic[len(head) :].split("/") if topic.startswith(head) else []
    try:
        if len(parts) == 4 and parts[1] == "devices":
            gateway, device, kind = parts[0], parts[2], parts[3]
            return _device_item(validators, topic, gateway, device, kind, payload)
        if len(parts) == 2 and parts[1] in ("state", "events"):
            gateway = parts[0]
            if parts[1] == "state":
                return GatewayState(gateway, validators.check("gateway-state", payload))
            data = validators.check("device-event", payload)
            return Event(gateway, data)
    except Invalid as exc:
        return DeadLetter(topic, payload, exc.reason)
    return DeadLetter(topic, payload, "not a topic of the punch stream")


def _device_item(
    validators: Validators, topic: str, gateway: str, device: str, kind: str, payload: bytes
) -> Item:
    if kind == "punches":
        batch = validators.check("punch-batch", payload)
        if (batch["gateway"], batch["device"]) != (gateway, device):
            raise Invalid(
                f"the topic names {gateway}/{device}, the batch {batch['gateway']}/{batch['device']}"
            )
        base = topic.rsplit("/devices/", 1)[0]
        return PunchBatch(base, gateway, device, batch["seq"], batch["records"])
    if kind == "state":
        data = validators.check("device-state", payload)
        if data["device"] != device:
            raise Invalid(f"the topic names device {device}, the state {data['device']}")
        return DeviceState(gateway, device, data)
    if kind == "events":
        data = validators.check("device-event", payload)
        return Event(gateway, {**data, "device": data.get("device") or device})
    if kind == "digests":
        data = validators.check("device-digests", payload)
        if (data["gateway"], data["device"]) != (gateway, device):
            raise Invalid(
                f"the topic names {gateway}/{device}, the digests {data['gateway']}/{data['device']}"
            )
        return Digests(gateway, data)
    raise Invalid("not a topic of the punch stream")
