"""Generates the AsyncAPI 3.0 document of the MQTT contract (docs/asyncapi.yaml) from the code.

Topic addresses come from `punchgate.sync.topics.Topics` (built with `{prefix}`, `{gateway_id}` and
`{device}` as channel parameters), the channel descriptions from its docstrings, the payload
schemas from the same generator as `docs/schemas/*.json` (the consumer schemas), the last will
from `punchgate.sync.contract.gateway_offline`. QoS, retain and who publishes are the contract's
(docs/mqtt-contract.md, "Topics"): `TOPICS` below says them once per topic; every topic `Topics`
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
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
from punchgate.sync.topics import Topics

ASYNCAPI_PATH = SCHEMA_DIR.parent / "asyncapi.yaml"
ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
SCHEMAS_REF = "#/components/schemas/"

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

# JSON Schema keywords whose meaning draft-07 (the base of AsyncAPI's Schema Object) lacks.
NEWER_KEYWORDS = frozenset(
    {
        "$anchor",
        "$dynamicAnchor",
        "$dynamicRef",
        "$recursiveAnchor",
        "$recursiveRef",
        "$vocabulary",
        "dependentRequired",
        "dependentSchemas",
        "maxContains",
        "minContains",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
# What may stand next to `$ref` (draft-07 ignores siblings of `$ref`; annotations lose nothing).
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated"})

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


def _doc(member: str) -> str:
    """A `Topics` member's docstring as one paragraph."""
    doc = inspect.getdoc(getattr(Topics, member))
    if not doc:
        raise ValueError(f"Topics.{member} has no docstring to describe its channel with")
    return " ".join(doc.split())


def _address(member: str) -> str:
    built = getattr(PARAMETER_TOPICS, member)
    return str(built(DEVICE_PARAMETER) if callable(built) else built)


def _check_topics() -> None:
    """Every topic `Topics` builds is described in `TOPICS`, and nothing else."""
    members = {name for name in vars(Topics) if not name.startswith("_") and name not in NOT_CHANNELS}
    members -= {field.name for field in dataclasses.fields(Topics)}
    described = [topic.member for topic in TOPICS]
    if sorted(described) != sorted(members):
        raise ValueError(f"TOPICS describes {sorted(described)} but Topics builds {sorted(members)}")


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nodes(item)


def embeddable(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A consumer schema as AsyncAPI embeds it: (the root schema, its definitions), both with
    `$ref`s to `#/components/schemas/`, without `$schema`, `$id` and `discriminator` objects."""
    schema = copy.deepcopy(schema)
    definitions: dict[str, Any] = schema.pop("$defs", {})
    schema.pop("$schema", None)
    schema.pop("$id", None)
    for node in _nodes([schema, definitions]):
        if isinstance(node.get("discriminator"), dict):
            del node["discriminator"]
        newer = NEWER_KEYWORDS & node.keys()
        if newer:
            raise ValueError(f"{sorted(newer)} mean nothing in draft-07 (AsyncAPI's Schema Object)")
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#/$defs/") or "/" in ref.removeprefix("#/$defs/"):
                raise ValueError(f"unexpected $ref {ref!r}")
            if set(node) - {"$ref"} - ANNOTATIONS:
                raise ValueError(f"draft-07 ignores what stands next to $ref: {sorted(node)}")
            node["$ref"] = SCHEMAS_REF + ref.removeprefix("#/$defs/")
    return schema, definitions


def _schema_name(schema: dict[str, Any]) -> str:
    """The model's name, which its `$id` ends with (`.../CommandRequest.json`)."""
    return str(schema["$id"]).rsplit("/", 1)[-1].removesuffix(".json")


def _components_schemas(consumer: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """components/schemas for the given consumer schemas (by file stem), and each one's name."""
    schemas: dict[str, Any] = {}
    names: dict[str, str] = {}
    for stem, schema in consumer.items():
        names[stem] = _schema_name(schema)
        root, definitions = embeddable(schema)
        for name, definition in {names[stem]: root, **definitions}.items():
            if name in schemas and schemas[name] != definition:
                raise ValueError(f"two different schemas are called {name}")
            schemas[name] = definition
    return dict(sorted(schemas.items())), names


def _mqtt(binding: dict[str, Any]) -> dict[str, Any]:
    return {"mqtt": {**binding, "bindingVersion": MQTT_BINDING_VERSION}}


def document(vocabulary: Vocabulary) -> dict[str, Any]:
    """The AsyncAPI document as a JSON-like value."""
    _check_topics()
    files = schema_files(vocabulary)
    stems = list(dict.fromkeys(topic.schema for topic in TOPICS))
    models = {**SCHEMA_MODELS, **COMMAND_SCHEMA_MODELS}
    schemas, names = _components_schemas({stem: json.loads(files[f"{stem}.json"]) for stem in stems})

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

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in TOPICS:
        address = _address(topic.member)
        channel_ref = f"#/channels/{topic.channel}"
        channels[topic.channel] = {
            "address": address,
            "title": re.sub("([A-Z])", r" \1", topic.channel).capitalize(),  # deviceState: Device state
            "description": _doc(topic.member),
            "parameters": {
                name: {"$ref": f"#/components/parameters/{name}"}
                for name in re.findall(r"\{([^}]+)\}", address)
            },
            "messages": {topic.message: {"$ref": f"#/components/messages/{topic.message}"}},
        }
        verb = "publish" if topic.action == "send" else "receive"
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
        operations[verb + topic.channel[0].upper() + topic.channel[1:]] = operation

    default_protocol = MqttSettings.model_fields["protocol"].default
    offline = gateway_offline().decode()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "punchgate MQTT contract",
            "version": str(SCHEMA_VERSION),
            "description": DESCRIPTION.format(version=SCHEMA_VERSION),
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "broker:1883",
                "protocol": "mqtt",
                "protocolVersion": default_protocol,
                "description": SERVER_DESCRIPTION.format(default=default_protocol, offline=offline),
                "bindings": _mqtt(
                    {
                        "cleanSession": True,
                        "lastWill": {
                            "topic": _address("gateway_state"),
                            "qos": 1,
                            "message": offline,
                            "retain": True,
                        },
                    }
                ),
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"parameters": PARAMETERS, "messages": messages, "schemas": schemas},
    }


# ---------------------------------------------------------------------------------------------
# YAML, block style: strings plain where YAML cannot read them as anything else, literal blocks
# for multi-line text, else in JSON's double quotes (JSON's escapes are YAML's too).

_PLAIN = re.compile(r"[A-Za-z$][A-Za-z0-9_./$ (),;'+=-]*(?<! )")
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# Not printable in YAML, or a line break to it: escaped inside double quotes.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        quoted = json.dumps(value, ensure_ascii=False)
        return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _block(value: Any) -> bool:
    """Whether `value` is text a literal block scalar (`|-`) holds exactly."""
    if not isinstance(value, str) or "\n" not in value:
        return False
    lines = value.split("\n")
    return (
        not value.endswith("\n")
        and lines[0][:1] not in ("", " ")  # what YAML readers keep of a block's first line
        and not _UNSAFE.search(value)
        and not any(char in value for char in "\r\t")
        and all(line.strip() or not line for line in lines)
    )


def _yaml(value: Any, indent: int) -> Iterator[str]:
    """The lines of a non-empty mapping or list, indented by `indent`."""
    pad = " " * indent
    items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
    for key, item in items:
        head = f"{pad}{_scalar(str(key))}:" if isinstance(value, dict) else f"{pad}-"
        if isinstance(item, dict | list) and item:
            if isinstance(value, dict):  # a list under a key may sit at the key's indentation
                yield head
                yield from _yaml(item, indent + 2 if isinstance(item, dict) else indent)
            else:
                first, *rest = _yaml(item, indent + 2)
                yield f"{head} {first[indent + 2 :]}"
                yield from rest
        elif _block(item):
            yield f"{head} |-"
            yield from (f"{pad}  {line}" if line else "" for line in item.split("\n"))
        else:
            yield f"{head} {_scalar(item)}"


def to_yaml(value: dict[str, Any]) -> str:
    """A non-empty mapping of mappings, lists, strings, numbers, booleans and None as YAML."""
    return "\n".join(_yaml(value, 0)) + "\n"


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
