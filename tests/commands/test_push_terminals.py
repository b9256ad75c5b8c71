"""zk-push terminals take commands through the push command queue (tests/commands/
test_push_commands.py); punches.resend works without it (it is the buffer's), users.list answers
from the user list the terminal uploaded, and what the queue has no command for is answered
`unsupported` at once, saying why."""

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

    for command in ("device.enable", "device.disable"):
        answer = await central.arun(command, "lobby")
        assert answer["error"]["code"] == "unsupported", answer.payload
        assert "command queue has no such command" in answer["error"]["message"]
    # users.list: the user list the terminal uploaded; this one never connected.
    listed = await central.arun("users.list", "lobby")
    assert listed["status"] == "ok", listed.payload
    assert listed["result"] == {"count": 0, "users": [], "source": "uploaded", "as_of": None}
    resend = await central.arun("punches.resend", "lobby", args={"day": "2026-11-30"})
    assert resend["status"] == "ok" and resend["result"] == {"requeued": 0}
