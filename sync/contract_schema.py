"""The JSON Schema generator: every payload model as a strict schema and as a consumer schema, and their files.

The consumer schemas (`docs/schemas/`) allow unknown fields and later names; the strict ones
(`docs/schemas/strict/`) say exactly what this release sends. The vocabularies come in from
`punchgate.gateway.contract_schemas`, which may see every layer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from punchgate.sync.contract_confirm import Confirmation
from punchgate.sync.contract_digests import DeviceDigests
from punchgate.sync.contract_markers import COMPLETE_KEY, SENT_WHEN_KEY, VOCABULARY_KEY
from punchgate.sync.contract_punches import SCHEMA_VERSION, PunchBatch, PunchRecord
from punchgate.sync.contract_states import AuditHead, DeviceEvent, DeviceState, GatewayState
from punchgate.sync.contract_strict import require_every_field
from punchgate.sync.contract_vocabulary import OPEN_VOCABULARIES, Vocabulary, apply_vocabulary

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
STRICT_SCHEMA_DIR = SCHEMA_DIR / "strict"

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "punch-batch": PunchBatch,
    "punch-record": PunchRecord,
    "gateway-state": GatewayState,
    "device-state": DeviceState,
    "device-event": DeviceEvent,
    "confirmation": Confirmation,
    "device-digests": DeviceDigests,
    "audit-head": AuditHead,
}


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nodes(item)


def json_schema(model: type[BaseModel], vocabulary: Vocabulary, *, strict: bool) -> dict[str, Any]:
    """The JSON Schema of one payload: strict (exactly what this release sends) or for consumers
    (unknown fields allowed, fields added since 1.0 optional, open vocabularies extensible)."""
    schema = copy.deepcopy(model.model_json_schema(by_alias=True, mode="serialization"))
    for node in _nodes(schema):
        complete = node.pop(COMPLETE_KEY, False)
        if strict and complete:
            require_every_field(node)
        node.pop(SENT_WHEN_KEY, None)
        if not strict and node.get("additionalProperties") is False:
            del node["additionalProperties"]
        names = node.pop(VOCABULARY_KEY, None)
        if names is not None:
            open_ = not strict and (names in OPEN_VOCABULARIES)
            apply_vocabulary(node, vocabulary.values(names), open_=open_)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    variant = "strict/" if strict else ""
    schema["$id"] = f"https://punchgate.invalid/schemas/v{SCHEMA_VERSION}/{variant}{model.__name__}.json"
    return schema


def schema_files(vocabulary: Vocabulary) -> dict[str, str]:
    """Every schema file's text by its path relative to `SCHEMA_DIR` (`x.json`, `strict/x.json`)."""
    # The remote commands' payloads live in their own module, which builds on this one.
    from punchgate.sync.command_contract import COMMAND_SCHEMA_MODELS

    files = {}
    for strict in (False, True):
        for name, model in {**SCHEMA_MODELS, **COMMAND_SCHEMA_MODELS}.items():
            path = f"strict/{name}.json" if strict else f"{name}.json"
            files[path] = (
                json.dumps(json_schema(model, vocabulary, strict=strict), indent=2, sort_keys=True) + "\n"
            )
    return files


def write_schemas(vocabulary: Vocabulary, directory: Path = SCHEMA_DIR) -> list[Path]:
    """(Re)write every schema into `directory` (and its `strict/`); returns the files written."""
    written = []
    for relative, text in schema_files(vocabulary).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
