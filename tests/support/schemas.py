"""Validating MQTT payloads against the checked-in JSON Schemas (docs/schemas/*.json).

    validate("punch-batch", message.json())      # raises ValidationError on a mismatch
    with pytest.raises(ValidationError): validate("punch-record", broken)

jsonschema ships no type information (and its stub package is not a test dependency), so it
is imported here, once, and used through these typed functions.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Protocol, cast

import jsonschema  # type: ignore[import-untyped]

from punchgate.sync.contract import SCHEMA_DIR

ValidationError: type[Exception] = jsonschema.ValidationError


class Validator(Protocol):
    def validate(self, instance: Any) -> None: ...


@functools.cache
def validator(name: str) -> Validator:
    """The validator of docs/schemas/{name}.json, for its declared draft, checking formats too."""
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cast(Validator, cls(schema, format_checker=cls.FORMAT_CHECKER))


def validate(name: str, payload: Any) -> None:
    """Validate a payload against docs/schemas/{name}.json; raises `ValidationError` on a mismatch."""
    validator(name).validate(payload)
