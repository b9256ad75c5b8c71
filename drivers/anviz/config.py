"""The `[[terminals]]` entry of an Anviz TC_B terminal on a serial line or TCP."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from punchgate.drivers.anviz.endpoint import parse_endpoint
from punchgate.drivers.config import TerminalConfig


class AnvizTerminal(TerminalConfig):
    type: Literal["anviz"] = Field(description="Anviz TC_B terminal over RS232/RS485 or TCP")
    endpoint: str = Field(
        description="serial:///dev/ttyUSB0?baud=9600&parity=N (RS232/RS485) or tcp://host:5010; see docs/anviz.md"
    )
    device_id: int = Field(
        1, ge=1, le=0xFFFFFFFF, description="the terminal's communication device id (its address on the bus)"
    )
    live: bool = Field(True, description="listen for real-time punches between polls (TCP endpoints only)")
    timeout: float = Field(2.0, gt=0, le=300, description="seconds to wait for each reply")
    retries: int = Field(2, ge=0, le=10, description="resends after a lost or corrupted reply")
    epoch: Literal["2000-01-02", "2000-01-01"] = Field(
        "2000-01-02", description="day the record clock counts from (most firmware: 2000-01-02)"
    )
    mark_read: bool = Field(
        True,
        description="clear the terminal's new-record flags after a durable commit (records stay in its log)",
    )

    @field_validator("endpoint")
    @classmethod
    def _valid_endpoint(cls, value: str) -> str:
        parse_endpoint(value)  # raises ValueError saying what is wrong
        return value.strip()

    @property
    def clear_log(self) -> bool:
        """What the worker asks: Anviz reads only new records, so marking them read is the clear."""
        return self.mark_read
