"""What one flush of the sink carries to the database, and what writing it stored.

The consumer turns each MQTT message into one `Item` (a punch batch, a state, an event, the
digests, or a dead letter for what it cannot take); `write` stores a flush's items and answers
with `Written`, whose `confirm` lists the punch ids to confirm to each gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PunchBatch:
    base: str  # the gateway's base topic: its confirmations go to {base}/confirm
    gateway: str
    device: str
    seq: int
    records: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DeviceState:
    gateway: str
    device: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GatewayState:
    gateway: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    gateway: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Digests:
    gateway: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str


Item = PunchBatch | DeviceState | GatewayState | Event | Digests | DeadLetter


@dataclass
class Written:
    """What one committed flush stored."""

    punches_new: int = 0
    punches_repeated: int = 0
    dead_letters: int = 0
    confirm: dict[str, list[str]] = field(default_factory=dict)  # gateway base topic -> ids stored
    digests_changed: bool = False
