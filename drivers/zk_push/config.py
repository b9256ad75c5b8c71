"""The `[[terminals]]` entry of a ZK terminal that pushes its records to the gateway (ADMS).

Such a terminal is not polled: it connects to the gateway's `[push]` listener and says who it
is with its serial number in every request. The serial number is therefore this entry's
identity (two entries may not share one), and `allowed_sources` can pin where its requests
may come from. The other keys become the option block the gateway answers the terminal's
handshake with (docs/zk-push.md).
"""

from __future__ import annotations

import ipaddress
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from punchgate.drivers.config import Claim, TerminalConfig

SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,55}$"
Table = Literal["ATTLOG", "OPERLOG", "ATTPHOTO"]


class ZkPushTerminal(TerminalConfig):
    key_hints: ClassVar[dict[str, str]] = {
        "host": "a push terminal connects to the gateway: it has no `host`; "
        "pin where it may connect from with `allowed_sources`",
        "port": "a push terminal connects to the [push] listener's port: it has no `port` of its own",
        "sn": "write the terminal's serial number in `serial_number`",
        "serial": "write the terminal's serial number in `serial_number`",
        "comm_key": "push terminals send no comm key; pin their addresses with `allowed_sources`",
        "live": "a push terminal's real-time upload is `realtime`",
    }

    type: Literal["zk-push"] = Field(description="ZKTeco-style terminal pushing over HTTP (ADMS / iclock)")
    serial_number: str = Field(
        pattern=SERIAL_PATTERN,
        description="the terminal's serial number (SN=): identifies its requests; shown in its "
        "System Info / Device Info menu",
    )
    encoding: Literal["utf-8", "gb18030", "gbk"] = Field(
        "utf-8", description="text encoding of user names in its uploads (gb18030 or gbk: Chinese firmware)"
    )
    allowed_sources: list[str] = Field(
        [],
        description="addresses or networks (192.0.2.7, 192.0.2.0/24) its requests may come from; "
        "empty: any (the serial number is a claim, not a secret)",
    )
    realtime: bool = Field(True, description="ask the terminal to push each punch as it happens")
    delay: int = Field(10, ge=2, le=3600, description="seconds between the terminal's heartbeats")
    error_delay: int = Field(30, ge=2, le=3600, description="seconds the terminal waits after an error")
    trans_interval: int = Field(
        1, ge=1, le=1440, description="minutes between uploads when realtime is false"
    )
    poll_interval: float = Field(60.0, ge=1, le=86400, description="not used: a push terminal is not polled")
    full_read_every: float = Field(
        3600.0, ge=1, le=7 * 86400, description="not used: a push terminal uploads what it holds"
    )
    commands_per_answer: int = Field(
        10,
        ge=1,
        le=100,
        description="queued commands (punchgate push-command) sent in one heartbeat answer at most",
    )
    clear_log: bool = Field(
        False,
        description="let the log.clear remote command clear the terminal's attendance log "
        "(CLEAR LOG, after the terminal was asked to upload what it holds); never done on its own",
    )
    tables: list[Table] = Field(
        ["ATTLOG", "OPERLOG"],
        description="what the terminal is asked to upload: ATTLOG (punches, required), OPERLOG "
        "(operation log and user list; never fingerprints), ATTPHOTO (photos: answered, not kept)",
    )

    @field_validator("allowed_sources")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                shown = entry if len(entry) <= 60 else entry[:57] + "..."
                raise ValueError(
                    f"{shown!r} is not an address or network: write e.g. 192.0.2.7 or 192.0.2.0/24"
                ) from None
        return value

    @field_validator("tables")
    @classmethod
    def _attlog_first(cls, value: list[Table]) -> list[Table]:
        if "ATTLOG" not in value:
            raise ValueError('must include "ATTLOG": the punches are what the terminal is here for')
        return list(dict.fromkeys(value))

    def claims(self) -> tuple[Claim, ...]:
        return (
            Claim(
                key=f"zk-push serial {self.serial_number}",
                label=f"serial number {self.serial_number}",
                field="serial_number",
                fix="each push terminal needs its own serial number",
            ),
        )
