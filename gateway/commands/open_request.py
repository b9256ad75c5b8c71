"""A request accepted and not finished yet, as the service keeps it in memory: its routing and each target's status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from punchgate.gateway.commands.catalogue import CommandSpec
from punchgate.sync.command_contract import AnyRequest


@dataclass
class OpenRequest:
    """A request accepted and not finished yet: its routing and each target's status."""

    request: AnyRequest
    spec: CommandSpec
    document: dict[str, Any]
    reply_topic: str
    correlation: bytes | None
    expires_at: float
    targets: dict[str, str]  # target -> waiting / running / ok / error / expired
    attempts: Counter[str] = field(default_factory=Counter)

    @property
    def id(self) -> str:
        return self.request.id
