"""How the contract writes time: ISO 8601 in UTC with a `Z` (`utc_iso`), and the patterns of its time fields."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

LOCAL_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"
UTC_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
OFFSET_PATTERN = r"^[+-]\d{2}:\d{2}$"


def utc_iso(value: dt.datetime) -> str:
    """A timestamp as the contract writes it everywhere: ISO 8601, UTC, `Z` (naive means UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


UtcDateTime = Annotated[
    dt.datetime,
    PlainSerializer(utc_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": UTC_TIME_PATTERN}),
]
