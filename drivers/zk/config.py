"""The `[[terminals]]` entry of a ZK terminal polled over TCP or UDP."""

from __future__ import annotations

import codecs
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from punchgate.drivers.config import Port, TerminalConfig


class ZkTerminal(TerminalConfig):
    type: Literal["zk"] = Field(description="ZKTeco-style terminal, ZK protocol")
    host: str = Field(min_length=1, description="terminal address")
    port: Port = Field(4370, description="terminal port")
    transport: Literal["tcp", "udp"] = Field("tcp", description="tcp for TFT firmware, udp for BW firmware")
    comm_key: SecretStr | None = Field(None, description="numeric comm key (password); 0 or absent: none")
    live: bool = Field(True, description="listen for real-time punches between polls")
    encoding: str = Field("utf-8", description="text encoding of user names (e.g. gbk)")
    timeout: float = Field(10.0, gt=0, le=300, description="base socket timeout in seconds")
    clear_log: bool = Field(False, description="clear the terminal's log after a verified durable read")

    @field_validator("comm_key")
    @classmethod
    def _numeric_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"\d{1,10}", value.get_secret_value()):
            raise ValueError("must be a number (0..4294967295)")
        if value is not None and int(value.get_secret_value()) > 0xFFFFFFFF:
            raise ValueError("must be a number (0..4294967295)")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value
