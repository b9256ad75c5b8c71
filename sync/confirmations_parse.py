"""Confirmations from `{base}/confirm`, parsed, and what they name taken out of what the gateway
remembers (sync/confirmations.py): the first of the two steps a confirmation goes through.

Kept apart from the buffer write (the second step) because it is plain Python, holding the
interpreter's lock, while the write is mostly SQLite, which lets go of it: run in their own
threads, the next confirmations are parsed while the previous ones are written, and the write,
which is the drain's critical path in central delivery, no longer waits for them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

from pydantic import ValidationError

from punchgate.sync.confirmations_sent import SentIds
from punchgate.sync.contract import CONFIRM_SCHEMA_NAME, Confirmation

# A malformed confirmation is logged with at most this much of its payload.
LOGGED_PAYLOAD_BYTES = 1000


def shown(payload: bytes) -> str:
    """A payload as it goes into a log line: decoded with replacements, cut at LOGGED_PAYLOAD_BYTES."""
    text = payload[:LOGGED_PAYLOAD_BYTES].decode("utf-8", errors="replace")
    return text + ("…" if len(payload) > LOGGED_PAYLOAD_BYTES else "")


def parse_confirmation(payload: bytes) -> Confirmation:
    """A confirmation from its JSON; fields this release does not know are ignored (a later
    consumer may send more). Raises ValueError naming what is wrong."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("schema") != CONFIRM_SCHEMA_NAME:
        raise ValueError(f"schema is {data.get('schema')!r}, not {CONFIRM_SCHEMA_NAME!r}")
    known = {"schema", "version", "consumer", "ids", "batches"}
    batches = data.get("batches")
    if isinstance(batches, list):
        data["batches"] = [
            {k: v for k, v in b.items() if k in {"device", "seq", "count"}} if isinstance(b, dict) else b
            for b in batches
        ]
    try:
        return Confirmation.model_validate({k: v for k, v in data.items() if k in known})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ValueError(problems) from None


@dataclass
class Taken:
    """Confirmations whose ids were looked up in `SentIds` (and forgotten there), ready to be
    written: rows this process sent and never marked sent (`unsent`, counted per terminal in
    `devices` when every terminal is known), rows that may carry a `sent_at` (`sent`), and ids
    it does not remember (`other_ids`, found in the buffer by id). Batches are not looked up
    here: `confirmations` still carries them."""

    confirmations: list[Confirmation] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    other_ids: list[str] = field(default_factory=list)
    devices: Counter[str] | None = field(default_factory=Counter)


def take(confirmations: Sequence[Confirmation], sent_ids: SentIds) -> Taken:
    """What these confirmations name, taken out of `sent_ids` (repeats named once)."""
    ids = list(dict.fromkeys(chain.from_iterable(c.ids for c in confirmations)))
    unsent, sent, other_ids, devices = sent_ids.take_counted(ids)
    return Taken(list(confirmations), unsent, sent, other_ids, devices)


def merged(parts: Sequence[Taken]) -> Taken:
    """Several `Taken` as one, to be written in one transaction. An id is taken out of
    `SentIds` once, so no row appears in two parts' pk lists; an id not remembered may be named
    by two parts (the write looks each such id up once)."""
    if len(parts) == 1:
        return parts[0]
    out = Taken()
    for part in parts:
        out.confirmations.extend(part.confirmations)
        out.unsent.extend(part.unsent)
        out.sent.extend(part.sent)
        out.other_ids.extend(part.other_ids)
        if out.devices is not None:
            out.devices = None if part.devices is None else out.devices + part.devices
    return out
