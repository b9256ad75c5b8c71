"""Every payload the sink reads is checked against the contract's consumer schemas.

The schemas are generated here from the same models (`punchgate.sync.contract.json_schema`,
consumer variant) as the files in docs/schemas/, so an installed sink needs no checkout. The
only inputs the generator takes from outside sync are the names of the open vocabularies
(state, verify and device fault names), which the consumer variant accepts in any case ("a
name added by a later release"): they are left empty here, which changes what the schema
lists, not what it accepts. tests/sink/test_validate.py holds the two equal in that sense.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, get_args

import jsonschema_rs

from punchgate.sync import records
from punchgate.sync.contract import SCHEMA_MODELS, Severity, Vocabulary, json_schema
from punchgate.sync.faults import GatewayFault


def vocabulary() -> Vocabulary:
    """What sync itself defines; the open vocabularies defined elsewhere are left empty."""
    return Vocabulary(
        state_names=[],
        verify_names=[],
        time_flags=[value for key, value in vars(records).items() if key.startswith("FLAG_")],
        device_faults=[],
        gateway_faults=[fault.value for fault in GatewayFault],
        severities=list(get_args(Severity)),
    )


def consumer_schema(name: str) -> dict[str, Any]:
    """The consumer schema of one payload (`punch-batch`, `device-state`, ...)."""
    return json_schema(SCHEMA_MODELS[name], vocabulary(), strict=False)


@dataclass(frozen=True, slots=True)
class Invalid(Exception):
    """Why a payload was refused (for the dead-letter table)."""

    reason: str


class Validators:
    """One compiled validator per payload kind; `check` parses and validates, or raises Invalid.

    jsonschema-rs (compiled, draft 2020-12, formats checked): the pure-Python jsonschema takes
    about 1 ms per punch record with these schemas, this about 4 µs."""

    def __init__(self) -> None:
        self._validators = {
            name: jsonschema_rs.validator_for(consumer_schema(name), validate_formats=True)
            for name in SCHEMA_MODELS
        }

    def check(self, name: str, payload: bytes) -> dict[str, Any]:
        """The payload as JSON once it conforms to the consumer schema `name`."""
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Invalid(f"not JSON: {exc}") from None
        errors = list(self._validators[name].iter_errors(data))
        if errors:
            first = min(errors, key=lambda e: len(e.instance_path))
            where = "/".join(str(part) for part in first.instance_path) or "(top level)"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise Invalid(f"{name}: {where}: {first.message[:300]}{more}")
        if not isinstance(data, dict):
            raise Invalid(f"{name}: not a JSON object")
        return data
