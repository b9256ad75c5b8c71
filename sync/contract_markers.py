"""The payload models' common base and the markers they leave for the schema generator.

A model marks which vocabulary a field's values come from (`names_from`), whether every field is
always sent (`COMPLETE_KEY`), and which field is sent only with a given value of another
(`SENT_WHEN_KEY`); `contract_schema` turns the markers into the strict and consumer schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# Markers for the schema generator: which vocabulary a field's values come from (see `Vocabulary`).
VOCABULARY_KEY = "x-vocabulary"
COMPLETE_KEY = "x-complete"  # every field is always sent (the strict schemas require them all)
# ... except a field marked with this key: sent exactly when another field has a given value,
# e.g. {"source": "manual"} (the strict schemas say so with if/then/else).
SENT_WHEN_KEY = "x-sent-when"


def names_from(vocabulary: str) -> dict[str, Any]:
    """The marker saying a field's values come from `vocabulary` (a `Vocabulary` field name)."""
    return {VOCABULARY_KEY: vocabulary}


class Payload(BaseModel):
    """A payload: no unknown fields, immutable, every field always sent unless it says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={COMPLETE_KEY: True})
