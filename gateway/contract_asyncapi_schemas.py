"""The consumer schemas (docs/schemas/) as the AsyncAPI document embeds them, in components/schemas.

Each schema's `$defs` move next to it (refs rewritten), its `$schema` and `$id` go, and
OpenAPI-style `discriminator` objects go (the official parser refuses them; in JSON Schema they
are annotations, so what validates is the same). Schemas whose meaning would differ under
draft-07, on which AsyncAPI's Schema Object builds, are refused: keywords new in 2019-09/2020-12,
and `$ref` next to anything but annotations.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

SCHEMAS_REF = "#/components/schemas/"

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


def components_schemas(consumer: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
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
