"""Generates the AsyncAPI 3.0 document of the MQTT contract (docs/asyncapi.yaml) from the code.

Topic addresses come from `punchgate.sync.topics.Topics` (built with `{prefix}`, `{gateway_id}` and
`{device}` as channel parameters), the channel descriptions from its docstrings, the payload
schemas from the same generator as `docs/schemas/*.json` (the consumer schemas), the last will
from `punchgate.sync.contract.gateway_offline`. QoS, retain and who publishes are the contract's
(docs/mqtt-contract.md, "Topics"): `TOPICS` (`contract_asyncapi_topics`) says them once per topic; every topic `Topics`
builds must be described there, or the generator fails.

The payload schemas are embedded rather than referenced as files: `$ref: schemas/x.json` would
be resolved by tools, but then checked as AsyncAPI Schema Objects, and the official parser
refuses the consumer schemas' OpenAPI-style `discriminator` object (AsyncAPI's `discriminator`
is a property name with other semantics). So each consumer schema is embedded under
`components/schemas` with these changes only: its `$defs` move next to it (refs rewritten), its
`$schema` and `$id` go, and `discriminator` objects go. None of them changes what validates:
`discriminator` is an annotation in JSON Schema (the `oneOf` with a `const` per branch decides),
and the generator refuses schemas whose meaning would differ under draft-07, on which AsyncAPI's
Schema Object builds (keywords new in 2019-09/2020-12, `$ref` next to anything but annotations).
Each message names the file it came from (`x-schema-file`).

    python -m punchgate.gateway.contract_schemas           # rewrites the schemas and this document
    python -m punchgate.gateway.contract_schemas --check   # exit 1 if any of them is stale

tests/sync/test_asyncapi.py keeps the document in step and validates it with the official
AsyncAPI parser (@asyncapi/parser, run by Node; `./dev setup` installs it).

The parts: `contract_asyncapi_topics` (what the contract says per topic), `contract_asyncapi_schemas`
(the consumer schemas made embeddable) and `contract_yaml` (the YAML writer). This module puts
the document together and writes or checks the file.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

from punchgate.gateway.contract_asyncapi_schemas import (
    ANNOTATIONS,
    NEWER_KEYWORDS,
    SCHEMAS_REF,
    components_schemas,
    embeddable,
)
from punchgate.gateway.contract_asyncapi_topics import (
    DEVICE_PARAMETER,
    MESSAGE_BINDINGS,
    NOT_CHANNELS,
    PARAMETER_TOPICS,
    PARAMETERS,
    TOPICS,
    Topic,
    address,
    channel_description,
    check_topics,
)
from punchgate.gateway.contract_yaml import to_yaml
from punchgate.sync.command_contract import COMMAND_SCHEMA_MODELS
from punchgate.sync.contract import (
    SCHEMA_DIR,
    SCHEMA_MODELS,
    SCHEMA_VERSION,
    Vocabulary,
    gateway_offline,
    schema_files,
)
from punchgate.sync.settings import MqttSettings

__all__ = [
    "ANNOTATIONS",
    "ASYNCAPI_PATH",
    "ASYNCAPI_VERSION",
    "DESCRIPTION",
    "DEVICE_PARAMETER",
    "MESSAGE_BINDINGS",
    "MQTT_BINDING_VERSION",
    "NEWER_KEYWORDS",
    "NOT_CHANNELS",
    "PARAMETERS",
    "PARAMETER_TOPICS",
    "SCHEMAS_REF",
    "SERVER_DESCRIPTION",
    "TOPICS",
    "Topic",
    "document",
    "embeddable",
    "is_stale",
    "render",
    "to_yaml",
    "write",
]

ASYNCAPI_PATH = SCHEMA_DIR.parent / "asyncapi.yaml"
ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"

DESCRIPTION = """\
The MQTT API of a punchgate gateway, contract v{version}: what it publishes (states, punch batches, \
events, the audit head, reconciliation digests, answers to remote commands) and what it reads \
(confirmations from central consumers, remote command requests). docs/mqtt-contract.md explains \
the rules (delivery, deduplication, ordering, versioning).

Generated from the code by `python -m punchgate.gateway.contract_schemas`; do not edit. The \
payload schemas are the consumer schemas (docs/schemas/*.json; each message's `x-schema-file` \
names its file) embedded, with their `$defs` moved to components/schemas and OpenAPI-style \
`discriminator` annotations left out (AsyncAPI's means something else); what validates is the same. \
Consumers accept fields and vocabulary names they do not know (see Versioning in \
docs/mqtt-contract.md)."""

SERVER_DESCRIPTION = """\
An example: the broker the gateway is configured to use (`[mqtt]` host and port; protocol \
`mqtts` with `[mqtt.tls]`). The gateway speaks MQTT {default} by default or 5 \
(`mqtt.protocol`); a remote command's response topic and correlation data need MQTT 5. The \
bindings describe the gateway's own connection: a clean session, and a retained last will \
`{offline}` on `{{prefix}}/{{gateway_id}}/state`."""


def _mqtt(binding: dict[str, Any]) -> dict[str, Any]:
    """`binding` as the MQTT bindings object of a server, channel, operation or message."""
    return {"mqtt": {**binding, "bindingVersion": MQTT_BINDING_VERSION}}


def document(vocabulary: Vocabulary) -> dict[str, Any]:
    """The AsyncAPI document as a JSON-like value."""
    check_topics()
    files = schema_files(vocabulary)
    stems = list(dict.fromkeys(topic.schema for topic in TOPICS))
    schemas, names = components_schemas({stem: json.loads(files[f"{stem}.json"]) for stem in stems})
    messages = _messages(names)
    channels, operations = _channels_and_operations()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "punchgate MQTT contract",
            "version": str(SCHEMA_VERSION),
            "description": DESCRIPTION.format(version=SCHEMA_VERSION),
        },
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": channels,
        "operations": operations,
        "components": {"parameters": PARAMETERS, "messages": messages, "schemas": schemas},
    }


def _messages(names: dict[str, str]) -> dict[str, Any]:
    """components/messages: one per message id, its payload the consumer schema named `names[stem]`."""
    models = {**SCHEMA_MODELS, **COMMAND_SCHEMA_MODELS}
    messages: dict[str, Any] = {}
    for topic in TOPICS:
        model = models[topic.schema]
        message: dict[str, Any] = {
            "name": topic.message,
            "title": names[topic.schema],
            "description": inspect.getdoc(model) or "",
            "contentType": "application/json",
            "payload": {"$ref": SCHEMAS_REF + names[topic.schema]},
            "x-schema-file": f"schemas/{topic.schema}.json",
        }
        if topic.message in MESSAGE_BINDINGS:
            message["bindings"] = _mqtt(MESSAGE_BINDINGS[topic.message])
        messages.setdefault(topic.message, message)
    return messages


def _channels_and_operations() -> tuple[dict[str, Any], dict[str, Any]]:
    """A channel per topic, and the gateway's operation on it (publish or receive)."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in TOPICS:
        channels[topic.channel] = _channel(topic)
        verb = "publish" if topic.action == "send" else "receive"
        operations[verb + topic.channel[0].upper() + topic.channel[1:]] = _operation(topic)
    return channels, operations


def _channel(topic: Topic) -> dict[str, Any]:
    channel_address = address(topic.member)
    return {
        "address": channel_address,
        "title": re.sub("([A-Z])", r" \1", topic.channel).capitalize(),  # deviceState: Device state
        "description": channel_description(topic.member),
        "parameters": {
            name: {"$ref": f"#/components/parameters/{name}"}
            for name in re.findall(r"\{([^}]+)\}", channel_address)
        },
        "messages": {topic.message: {"$ref": f"#/components/messages/{topic.message}"}},
    }


def _operation(topic: Topic) -> dict[str, Any]:
    channel_ref = f"#/channels/{topic.channel}"
    operation: dict[str, Any] = {
        "action": topic.action,
        "channel": {"$ref": channel_ref},
        "summary": topic.summary,
        "messages": [{"$ref": f"{channel_ref}/messages/{topic.message}"}],
        "bindings": _mqtt({"qos": topic.qos, "retain": topic.retain}),
    }
    if topic.reply is not None:
        (reply,) = (answer for answer in TOPICS if answer.member == topic.reply)
        operation["reply"] = {
            "channel": {"$ref": f"#/channels/{reply.channel}"},
            "messages": [{"$ref": f"#/channels/{reply.channel}/messages/{reply.message}"}],
        }
    return operation


def _servers() -> dict[str, Any]:
    """The example broker, with the bindings of the gateway's own connection (its last will)."""
    default_protocol = MqttSettings.model_fields["protocol"].default
    offline = gateway_offline().decode()
    return {
        "broker": {
            "host": "broker:1883",
            "protocol": "mqtt",
            "protocolVersion": default_protocol,
            "description": SERVER_DESCRIPTION.format(default=default_protocol, offline=offline),
            "bindings": _mqtt(
                {
                    "cleanSession": True,
                    "lastWill": {
                        "topic": address("gateway_state"),
                        "qos": 1,
                        "message": offline,
                        "retain": True,
                    },
                }
            ),
        }
    }


def render(vocabulary: Vocabulary) -> str:
    """docs/asyncapi.yaml's text."""
    header = "# Generated by `python -m punchgate.gateway.contract_schemas` from the code: do not edit.\n"
    return header + to_yaml(document(vocabulary))


def is_stale(vocabulary: Vocabulary, path: Path = ASYNCAPI_PATH) -> bool:
    """Whether the document at `path` is missing or differs from what the generator writes."""
    return not path.is_file() or path.read_text(encoding="utf-8") != render(vocabulary)


def write(vocabulary: Vocabulary, path: Path = ASYNCAPI_PATH) -> Path:
    path.write_text(render(vocabulary), encoding="utf-8")
    return path
