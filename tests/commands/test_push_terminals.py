"""zk-push terminals take commands only through the push protocol's command queue, which this
gateway does not have yet: punches.resend works (it is the buffer's), device.info answers what
the terminal last reported, and the rest is answered `unsupported` at once, saying why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from punchgate.gateway.mosquitto import free_port
from tests.commands.commander import Commander
from tests.commands.conftest import FAST, sections
from tests.support.gateway import GatewayProcess


async def test_what_a_push_terminal_answers(
    gateway_factory: Callable[..., GatewayProcess], central: Commander
) -> None:
    terminal = {"type": "zk-push", "name": "lobby", "serial_number": "PUSH0001"}
    push = {"bind": "127.0.0.1", "port": free_port()}
    gateway = gateway_factory([terminal], mqtt=FAST, sections={**sections(), "push": push})
    await asyncio.to_thread(gateway.start)
    await central.alistening()

    info = await central.arun("device.info", "lobby")
    assert info["error"]["code"] == "terminal_error" and "has not reported" in info["error"]["message"]
    for command in ("users.list", "device.restart", "device.set_time"):
        answer = await central.arun(command, "lobby")
        assert answer["error"]["code"] == "unsupported", answer.payload
        assert "command queue" in answer["error"]["message"]
    resend = await central.arun("punches.resend", "lobby", args={"day": "2026-11-30"})
    assert resend["status"] == "ok" and resend["result"] == {"requeued": 0}
