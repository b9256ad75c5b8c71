"""The MQTT payload contract, v1 (docs/mqtt-contract.md): pydantic models and their JSON Schemas.

The models are the single definition of every payload. The JSON Schemas in `docs/schemas/`
(for consumers: unknown fields and later names allowed) and `docs/schemas/strict/` (exactly what
this release sends; the tests validate the gateway's output with them) are generated from these
models (`contract_schema`) plus the name vocabularies (`contract_vocabulary`), which live in
drivers, sync and gateway. sync may not import
the other two, so the generator is `python -m punchgate.gateway.contract_schemas`, which collects
the vocabularies and calls `schema_files` here; a test keeps the checked-in files in step.

This module gathers the contract's parts under one name:

    contract_time           `utc_iso`: every timestamp in every payload (and in the gateway's
                            JSON API) is ISO 8601 in UTC with a `Z`
    contract_markers        the models' base and the markers they leave for the generator
    contract_punches        punch records and batches, and their fast rendering
    contract_states         gateway and device states, device events, the audit head
    contract_state_changes  when a retained device state is due
    contract_confirm        a central consumer's confirmation
    contract_digests        reconciliation digests
    contract_vocabulary     the name vocabularies, open or closed
    contract_strict         what the strict schemas require
    contract_schema         the schema generator and its files

The forwarder's hot path does not build pydantic objects: a record's JSON is rendered once,
when the punch is stored (`record_json`), and batch envelopes are assembled around those
strings (`batch_json`). Tests assert that this fast path produces exactly what the models
produce and that every payload validates against the schemas.

Retained device states are published on change only (`publish_due`), and refreshed at least
every `STATE_REFRESH_SECONDS` so that their `as_of` tells a live state from a stale one.
"""

from __future__ import annotations

from punchgate.sync.contract_confirm import (
    CONFIRM_SCHEMA_NAME,
    RECORD_ID_PATTERN,
    Confirmation,
    ConfirmedBatch,
)
from punchgate.sync.contract_digests import (
    DIGEST_SCHEME,
    DIGESTS_SCHEMA_NAME,
    DeviceDigests,
    DigestDay,
    day_digest,
)
from punchgate.sync.contract_punches import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    ManualDetails,
    PunchBatch,
    PunchRecord,
    StateCode,
    VerifyCode,
    batch_json,
    punch_to_record,
    record_json,
)
from punchgate.sync.contract_schema import (
    SCHEMA_DIR,
    SCHEMA_MODELS,
    STRICT_SCHEMA_DIR,
    json_schema,
    schema_files,
    write_schemas,
)
from punchgate.sync.contract_state_changes import (
    COUNT_BAND_SHARE,
    COUNT_BAND_UNKNOWN_CAPACITY,
    DRIFT_BAND_SECONDS,
    STATE_REFRESH_SECONDS,
    count_moved,
    publish_due,
    state_changed,
)
from punchgate.sync.contract_states import (
    AuditHead,
    DeviceEvent,
    DeviceState,
    Fault,
    GatewayState,
    Severity,
    gateway_offline,
    gateway_online,
)
from punchgate.sync.contract_time import (
    LOCAL_TIME_PATTERN,
    OFFSET_PATTERN,
    UTC_TIME_PATTERN,
    UtcDateTime,
    utc_iso,
    utc_now,
)
from punchgate.sync.contract_vocabulary import OPEN_VOCABULARIES, Vocabulary

__all__ = [
    "CONFIRM_SCHEMA_NAME",
    "COUNT_BAND_SHARE",
    "COUNT_BAND_UNKNOWN_CAPACITY",
    "DIGESTS_SCHEMA_NAME",
    "DIGEST_SCHEME",
    "DRIFT_BAND_SECONDS",
    "LOCAL_TIME_PATTERN",
    "OFFSET_PATTERN",
    "OPEN_VOCABULARIES",
    "RECORD_ID_PATTERN",
    "SCHEMA_DIR",
    "SCHEMA_MODELS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "STATE_REFRESH_SECONDS",
    "STRICT_SCHEMA_DIR",
    "UTC_TIME_PATTERN",
    "AuditHead",
    "Confirmation",
    "ConfirmedBatch",
    "DeviceDigests",
    "DeviceEvent",
    "DeviceState",
    "DigestDay",
    "Fault",
    "GatewayState",
    "ManualDetails",
    "PunchBatch",
    "PunchRecord",
    "Severity",
    "StateCode",
    "UtcDateTime",
    "VerifyCode",
    "Vocabulary",
    "batch_json",
    "count_moved",
    "day_digest",
    "gateway_offline",
    "gateway_online",
    "json_schema",
    "publish_due",
    "punch_to_record",
    "record_json",
    "schema_files",
    "state_changed",
    "utc_iso",
    "utc_now",
    "write_schemas",
]
