"""What makes a schema strict: every field required, and a conditional field required exactly with its condition."""

from __future__ import annotations

from typing import Any

from punchgate.sync.contract_markers import SENT_WHEN_KEY


def require_every_field(node: dict[str, Any]) -> None:
    """Strict: every field is required, but one sent only with a value of another field is
    required with it and absent without it (if/then/else)."""
    properties: dict[str, Any] = node["properties"]
    conditional = {name: p[SENT_WHEN_KEY] for name, p in properties.items() if SENT_WHEN_KEY in p}
    node["required"] = [name for name in properties if name not in conditional]
    for name in conditional:  # never sent as null: absent instead
        field = properties[name]
        field.pop("default", None)
        field["anyOf"] = [option for option in field.get("anyOf", []) if option.get("type") != "null"]
    rules = [
        {
            "if": {
                "properties": {key: {"const": value} for key, value in when.items()},
                "required": list(when),
            },
            "then": {"required": [name]},
            "else": {"not": {"required": [name]}},
        }
        for name, when in conditional.items()
    ]
    if rules:
        node["allOf"] = rules
