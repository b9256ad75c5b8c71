"""Reconciliation digests (docs/mqtt-contract.md, "Reconciliation digests"): what a gateway holds per local day."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from pydantic import ConfigDict, Field

from punchgate.sync.contract_markers import Payload
from punchgate.sync.contract_time import UtcDateTime

DIGESTS_SCHEMA_NAME = "punchgate.digests"
DIGEST_SCHEME = 1  # the digest recipe's version (docs/mqtt-contract.md, "Reconciliation digests")


class DigestDay(Payload):
    """The punches a gateway holds for one terminal-local day."""

    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="terminal-local day, YYYY-MM-DD")
    count: int = Field(ge=1, description="punches held for that day")
    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (hex) of the day's record ids, sorted, joined by newlines (scheme 1)",
    )


class DeviceDigests(Payload):
    """Retained on `{base}/devices/{device}/digests`: what the gateway holds per local day of one
    terminal, for reconciliation (docs/mqtt-contract.md, "Reconciliation digests")."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    schema_name: Literal["punchgate.digests"] = Field(alias="schema", description="payload schema name")
    version: Literal[1] = Field(description="payload schema version")
    scheme: Literal[1] = Field(description="digest recipe version")
    gateway: str = Field(description="id of the gateway that holds the punches")
    device: str = Field(description="configured name of the terminal")
    as_of: UtcDateTime = Field(description="when the gateway computed these digests")
    first_day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="first local day covered")
    last_day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="last local day covered")
    days: list[DigestDay] = Field(
        description="every covered day with at least one punch, oldest first; a covered day not "
        "listed has none"
    )


def day_digest(ids: Sequence[str]) -> str:
    """The digest of one day's record ids (scheme 1): SHA-256, hex, of the ids sorted and joined
    by "\\n" (no trailing newline), as UTF-8. Repeats count once."""
    return hashlib.sha256("\n".join(sorted(set(ids))).encode("utf-8")).hexdigest()
