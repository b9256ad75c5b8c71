"""Remote commands for zk-push terminals through the push command queue, end to end: a real
broker, the real gateway (its own process, its [push] listener) and the push-terminal emulator.

Each queued command answers `accepted`, `running` once the queue has sent it, then `ok` with
what the terminal did; a user that does not fit is refused before anything is queued; a negative
Return is `refused` naming the code; a terminal that does not ask in time gets `expired`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from punchgate.drivers.zk_push.emulator import commands as emulated
from punchgate.gateway.mosquitto import free_port
from tests.commands.commander import Commander
from tests.commands.conftest import FAST, sections
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until_async
from tests.zk_push.test_commands_end_to_end import SN, ZONE, emulator, push_terminal

SECRET_PIN = "80317246"  # a user password the log must never show


def start(gateway_factory: Callable[..., GatewayProcess], **terminal: Any) -> tuple[GatewayProcess, int]:
    push_port = free_port()
    push = {"bind": "127.0.0.1", "port": push_port}
    gateway = gateway_factory([push_terminal(**terminal)], mqtt=FAST, sections={**sections(), "push": push})
    gateway.start()
    return gateway, push_port


def statuses(central: Commander, request_id: str) -> list[str]:
    return [a["status"] for a in central.answers(request_id) if a["terminal"] in ("door-1", None)]


async def test_each_command_goes_through_the_queue_and_answers_what_the_terminal_did(
    gateway_factory: Callable[..., GatewayProcess], central: Commander
) -> None:
    gateway, push_port = await asyncio.to_thread(start, gateway_factory)
    await central.alistening()
    terminal = emulator(push_port)
    terminal.enroll("55", "Leaves Soon")
    async with terminal:
        await wait_until_async(lambda: terminal.online, timeout=20, message="the terminal online")

        info = await central.arun("device.info", "door-1")
        assert info["status"] == "ok", info.payload
        assert info["result"]["serial_number"] == SN and info["result"]["firmware"] == terminal.firmware
        assert statuses(central, info["id"]) == ["accepted", "running", "ok"]

        upsert = await central.arun(
            "users.upsert",
            "door-1",
            args={
                "users": [{"user_id": "7", "name": "Li Wei", "privilege": "admin", "password": SECRET_PIN}]
            },
        )
        assert upsert["status"] == "ok" and upsert["result"] == {"written": ["7"]}, upsert.payload
        assert terminal.users["7"].name == "Li Wei" and terminal.users["7"].privilege == 14

        delete = await central.arun("users.delete", "door-1", args={"user_ids": ["55"]})
        assert delete["result"] == {"deleted": ["55"], "not_found": []}, delete.payload
        assert "55" not in terminal.users

        when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=60)
        set_time = await central.arun("device.set_time", "door-1", args={"time": when.isoformat()})
        assert set_time["status"] == "ok", set_time.payload
        local = when.astimezone(ZoneInfo(ZONE)).replace(tzinfo=None)
        assert set_time["result"] == {"set_to": local.isoformat()}
        assert abs(terminal.now() - local) < dt.timedelta(seconds=30)

        handshakes = terminal.counters.handshakes
        read_now = await central.arun("device.read_now", "door-1")
        assert read_now["result"] == {"upload_requested": True}, read_now.payload
        await wait_until_async(
            lambda: terminal.counters.handshakes > handshakes, timeout=10, message="CHECK's handshake"
        )

        restart = await central.arun("device.restart", "door-1")
        assert restart["result"] == {"restarted": True}, restart.payload
        await wait_until_async(lambda: terminal.counters.reboots == 1, timeout=10, message="the reboot")
        assert terminal.counters.commands == 6  # each ran once

        # Still unsupported on a push terminal, at once.
        enable = await central.arun("device.enable", "door-1")
        assert enable["error"]["code"] == "unsupported" and "zk-push" in enable["error"]["message"]
    # As a whole number, not digits inside a timestamp or a float that merely contain it.
    assert not re.search(rf"(?<![0-9]){SECRET_PIN}(?![0-9])", gateway.log_text())


async def test_a_user_that_does_not_fit_a_refusal_and_an_expiry(
    gateway_factory: Callable[..., GatewayProcess],
    central: Commander,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _gateway, push_port = await asyncio.to_thread(start, gateway_factory, encoding="gbk")
    await central.alistening()

    # Nobody asks: the request expires, and so does its queue command.
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    expired = await central.arun("device.info", "door-1", expires_at=soon)
    assert expired["status"] == "expired" and statuses(central, expired["id"]) == ["accepted", "expired"]

    terminal = emulator(push_port, encoding="gbk")
    async with terminal:
        await wait_until_async(lambda: terminal.online, timeout=20, message="the terminal online")
        too_wide = await central.arun(
            "users.upsert", "door-1", args={"users": [{"user_id": "8", "name": "Ana 😀"}, {"user_id": "9"}]}
        )
        assert too_wide["error"]["code"] == "user_does_not_fit", too_wide.payload
        assert "user '8'" in too_wide["error"]["message"] and "gbk" in too_wide["error"]["message"]

        monkeypatch.setattr(emulated, "_update_user", lambda *_: emulated.Outcome(-1))
        refused = await central.arun("users.upsert", "door-1", args={"users": [{"user_id": "9"}]})
        assert refused["status"] == "error" and refused["error"]["code"] == "refused", refused.payload
        assert "Return=-1 (bad parameter) for user '9'" in refused["error"]["message"]
        assert statuses(central, refused["id"]) == ["accepted", "running", "error"]
        assert terminal.counters.commands == 1 and "8" not in terminal.users
