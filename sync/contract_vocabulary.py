"""The name vocabularies payloads carry, and how a schema lists them: closed (strict) or open (consumers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from punchgate.sync.records import Source


@dataclass(frozen=True, slots=True, kw_only=True)
class Vocabulary:
    """The names and codes payloads carry, as the code that produces them defines them.

    They live in drivers (state and verify names, device faults), sync (time flags, gateway
    faults) and gateway (severities), and sync may import neither of the others, so
    `punchgate.gateway.contract_schemas` collects them and passes them in.
    """

    state_names: Sequence[str]
    verify_names: Sequence[str]
    time_flags: Sequence[str]
    device_faults: Sequence[str]
    gateway_faults: Sequence[str]
    severities: Sequence[str]

    def values(self, name: str) -> list[str]:
        """A vocabulary's values without repeats, in the order given (fault_codes: both kinds)."""
        if name == "fault_codes":
            return list(dict.fromkeys([*self.device_faults, *self.gateway_faults]))
        if name == "sources":  # defined here in sync, by the record type
            return list(get_args(Source))
        return list(dict.fromkeys(getattr(self, name)))


# Vocabularies a later release may extend (a new terminal family, fault or flag) without a new
# schema version: the consumer schemas list them but accept other strings too.
# `source` is open too: the design announced `manual` and `push` as part of v1, and a new way
# of getting punches (a new terminal family) must not break consumers.
OPEN_VOCABULARIES = frozenset(
    {"state_names", "verify_names", "time_flags", "device_faults", "fault_codes", "sources"}
)


def _string_options(node: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Where a field's `{"type": "string"}` schema sits: (the schema whose `anyOf` holds it, its
    index). A bare string schema is wrapped into a one-option `anyOf` so all cases look alike."""
    if node.get("type") == "array":
        return _string_options(node["items"])
    if "anyOf" not in node:
        if node.get("type") != "string":
            raise ValueError(f"no string schema to put a vocabulary into: {node}")
        option = {key: node.pop(key) for key in ("type", "enum") if key in node}
        node["anyOf"] = [option]
    for index, option in enumerate(node["anyOf"]):
        if option.get("type") == "string":
            return node, index
    raise ValueError(f"no string schema to put a vocabulary into: {node}")


def apply_vocabulary(node: dict[str, Any], values: list[str], *, open_: bool) -> None:
    """Put `values` into the string schema at `node`; an open vocabulary also accepts later strings."""
    holder, index = _string_options(node)
    options: list[dict[str, Any]] = holder["anyOf"]
    declared = options[index].get("enum")  # a Literal in the model: it must agree with the code
    if declared is not None and sorted(declared) != sorted(values):
        raise ValueError(f"the model allows {sorted(declared)} but the code defines {sorted(values)}")
    known = {"type": "string", "enum": values}
    if open_:
        known["description"] = "known in this release"
        later = {"type": "string", "description": "added by a later release: accept it, treat it as unknown"}
        options[index : index + 1] = [known, later]
    else:
        options[index] = known
    if len(options) == 1:  # a plain closed string field: no anyOf needed
        holder.update(holder.pop("anyOf")[0])
