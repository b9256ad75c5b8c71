"""The `[[terminals]]` entry of a ZK terminal polled over TCP or UDP."""

from __future__ import annotations

import codecs
import re
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from punchgate.drivers.config import Claim, Port, TerminalConfig, check_host, host_key

# Codecs Python has that never decode a terminal's name bytes into text.
_NOT_TEXT = ("undefined",)


class ZkTerminal(TerminalConfig):
    key_hints: ClassVar[dict[str, str]] = {
        "endpoint": "a ZK terminal takes `host` and `port` (endpoint is for Anviz terminals)",
        "address": "write the terminal's address in `host`",
        "ip": "write the terminal's address in `host`",
        "password": "the ZK password is `comm_key`",
    }

    type: Literal["zk"] = Field(description="ZKTeco-style terminal, ZK protocol")
    host: str = Field(description="terminal address: IPv4, IPv6 or host name")
    port: Port = Field(4370, description="terminal port")
    transport: Literal["tcp", "udp"] = Field("tcp", description="tcp for TFT firmware, udp for BW firmware")
    comm_key: SecretStr | None = Field(None, description="numeric comm key (password); 0 or absent: none")
    live: bool = Field(True, description="listen for real-time punches between polls")
    encoding: str = Field("utf-8", description="text encoding of user names (e.g. gbk)")
    timeout: float = Field(10.0, gt=0, le=300, description="base socket timeout in seconds")
    clear_log: bool = Field(False, description="clear the terminal's log after a verified durable read")

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return check_host(value)

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
        shown = value if len(value) <= 40 else value[:37] + "..."
        try:
            info = codecs.lookup(value)
        except (LookupError, ValueError, TypeError):
            raise ValueError(
                f"unknown text encoding {shown!r}; write e.g. utf-8, gbk, cp1252 or latin-1"
            ) from None
        # rot13, base64, hex, zlib...: codecs, but bytes-to-bytes or str-to-str transforms.
        if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_TEXT:
            raise ValueError(
                f"{shown!r} is not a text encoding (it transforms data, it does not decode names); "
                "write e.g. utf-8, gbk, cp1252 or latin-1"
            )
        return value

    def claims(self) -> tuple[Claim, ...]:
        host = host_key(self.host)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return (
            Claim(
                key=f"{self.transport} {host}:{self.port}",
                label=f"{self.transport.upper()} {shown}:{self.port}",
                field="port",
                fix="each terminal needs its own host and port",
            ),
        )
