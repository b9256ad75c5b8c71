"""What the MQTT contract says about each topic, for the AsyncAPI document (`contract_asyncapi`).

QoS, retain and who publishes are the contract's (docs/mqtt-contract.md, "Topics"): `TOPICS`
says them once per topic, and every topic `punchgate.sync.topics.Topics` builds must be
described there (`check_topics`), or the generator fails. A channel's address is the topic
`Topics` builds with the channel parameters (`{prefix}`, `{gateway_id}`, `{device}`) in place
of the values, and its description is the docstring of the `Topics` member that builds it.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Literal

from punchgate.sync.settings import MqttSettings
from punchgate.sync.topics import Topics

# Topics built with the channel parameters in place of the values: the channels' addresses.
PARAMETER_TOPICS = Topics(prefix="{prefix}", gateway_id="{gateway_id}")
DEVICE_PARAMETER = "{device}"
# Members of `Topics` that are subscription filters, not topics anyone publishes to.
NOT_CHANNELS = frozenset({"base", "all_devices_wildcard", "everything_wildcard"})


@dataclass(frozen=True, slots=True)
class Topic:
    """What the contract says about one topic (docs/mqtt-contract.md, "Topics")."""

    member: str  # the `Topics` property or method that builds its name
    channel: str  # the channel's id in the document
    message: str  # the message's id (components/messages)
    schema: str  # the consumer schema file (docs/schemas/), without .json
    action: Literal["send", "receive"]  # the gateway's side: send = it publishes
    retain: bool
    summary: str
    qos: int = 1
    reply: str | None = None  # the `Topics` member whose channel answers a message received here


TOPICS = (
    Topic("gateway_state", "gatewayState", "gatewayState", "gateway-state", "send", True,
          "The gateway's online/offline state, with its delivery figures in central delivery"),
    Topic("device_state", "deviceState", "deviceState", "device-state", "send", True,
          "One terminal's health snapshot: published on change, refreshed every 10 minutes"),
    Topic("device_punches", "devicePunches", "punchBatch", "punch-batch", "send", False,
          "Batches of punch records of one terminal, oldest first; deduplicate on the record id"),
    Topic("device_events", "deviceEvents", "deviceEvent", "device-event", "send", False,
          "Faults of one terminal raised and cleared, clock corrections"),
    Topic("gateway_events", "gatewayEvents", "deviceEvent", "device-event", "send", False,
          "Faults of the gateway itself raised and cleared (device is empty)"),
    Topic("audit", "auditHead", "auditHead", "audit-head", "send", True,
          "The head of the buffer's audit chain (docs/audit.md)"),
    Topic("device_digests", "deviceDigests", "deviceDigests", "device-digests", "send", True,
          "Count and id digest per terminal-local day, for reconciliation"),
    Topic("confirm", "confirmations", "confirmation", "confirmation", "receive", False,
          "Published by central consumers: the punches they stored (read in central delivery)"),
    Topic("command_request", "commandRequests", "commandRequest", "command-request", "receive", False,
          "Published by central: a remote command (read while [commands] is enabled)",
          reply="command_response"),  # or the request's MQTT 5 response topic
    Topic("command_response", "commandResponses", "commandResponse", "command-response", "send", False,
          "The gateway's answers to remote commands (unless a request names an MQTT 5 response topic)"),
)  # fmt: skip

PARAMETERS: dict[str, dict[str, Any]] = {
    "prefix": {
        "description": "The first topic level: the gateway's `mqtt.topic_prefix`.",
        "default": MqttSettings.model_fields["topic_prefix"].default,
        "examples": [MqttSettings.model_fields["topic_prefix"].default],
    },
    "gateway_id": {
        "description": "The gateway's configured id (`gateway_id`).",
        "examples": ["site-a"],
    },
    "device": {
        "description": "A terminal's configured name: letters, digits, `_`, `.` and `-`.",
        "examples": ["door-1"],
    },
}

_REQUEST_MQTT5 = {
    "responseTopic": {
        "type": "string",
        "description": "Optional, MQTT 5: the topic to answer on instead of "
        "`{prefix}/{gateway_id}/commands/response` (which topics a gateway accepts: "
        'docs/mqtt-contract.md, "Remote commands").',
    },
    "correlationData": {
        "type": "string",
        "description": "Optional, MQTT 5: echoed in every answer to this request.",
    },
}
_RESPONSE_MQTT5 = {
    "correlationData": {
        "type": "string",
        "description": "MQTT 5: the request's correlation data, when it carried some.",
    },
}
MESSAGE_BINDINGS: dict[str, dict[str, Any]] = {
    "commandRequest": _REQUEST_MQTT5,
    "commandResponse": _RESPONSE_MQTT5,
}


def channel_description(member: str) -> str:
    """A `Topics` member's docstring as one paragraph."""
    doc = inspect.getdoc(getattr(Topics, member))
    if not doc:
        raise ValueError(f"Topics.{member} has no docstring to describe its channel with")
    return " ".join(doc.split())


def address(member: str) -> str:
    built = getattr(PARAMETER_TOPICS, member)
    return str(built(DEVICE_PARAMETER) if callable(built) else built)


def check_topics() -> None:
    """Every topic `Topics` builds is described in `TOPICS`, and nothing else."""
    members = {name for name in vars(Topics) if not name.startswith("_") and name not in NOT_CHANNELS}
    members -= {field.name for field in dataclasses.fields(Topics)}
    described = [topic.member for topic in TOPICS]
    if sorted(described) != sorted(members):
        raise ValueError(f"TOPICS describes {sorted(described)} but Topics builds {sorted(members)}")
