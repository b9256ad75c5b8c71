"""The confirmation a central consumer publishes on `{base}/confirm`: punches it stored durably."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from punchgate.sync.contract_markers import COMPLETE_KEY, Payload

RECORD_ID_PATTERN = r"^[0-9a-f]{32}$"
CONFIRM_SCHEMA_NAME = "punchgate.confirm"


class ConfirmedBatch(Payload):
    """One batch confirmed whole, named as the gateway numbered it."""

    device: str = Field(description="the batch's `device`")
    seq: int = Field(ge=1, description="the batch's `seq`")
    count: int = Field(
        ge=1, description="how many records the batch carried (a check: a mismatch is ignored)"
    )


class Confirmation(Payload):
    """Published by a central consumer on `{base}/confirm` (QoS 1, not retained): these punches
    are durably stored at central. Ids are the truth; batches are a shorthand that only works
    while the gateway remembers the batch (it forgets them when it restarts)."""

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, json_schema_extra={COMPLETE_KEY: False}
    )

    schema_name: Literal["punchgate.confirm"] = Field(alias="schema", description="payload schema name")
    version: Literal[1] = Field(description="payload schema version")
    consumer: str = Field(default="", description="who confirms (e.g. the consumer's client id), for logs")
    ids: list[Annotated[str, Field(pattern=RECORD_ID_PATTERN)]] = Field(
        default_factory=list, description="record ids stored durably, in any order, repeats allowed"
    )
    batches: list[ConfirmedBatch] = Field(
        default_factory=list, description="batches whose every record was stored durably"
    )
