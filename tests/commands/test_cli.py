"""`punchgate command`: the shell's way to the same topics, against a running gateway."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tests.commands.commander import Commander
from tests.commands.conftest import FAST, sections
from tests.support.config import zk_terminal
from tests.support.gateway import REPO, GatewayProcess


def _command(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "punchgate.gateway", "command", "--config", str(gateway.config_path)]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )


async def test_punchgate_command_from_a_shell(
    gateway_factory: Callable[..., GatewayProcess], zk_emulators: Callable[..., Any], central: Commander
) -> None:
    (door,) = await zk_emulators(1)
    gateway = gateway_factory([zk_terminal("door-1", door, poll_interval=30)], mqtt=FAST, sections=sections())
    await asyncio.to_thread(gateway.start)
    await central.alistening()

    info = await asyncio.to_thread(_command, gateway, "device.info", "door-1")
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[0].startswith("(request)") and "accepted" in lines[0]
    assert (
        lines[-1].startswith("door-1") and " ok " in lines[-1] and '"serial_number": "CMD00000"' in lines[-1]
    )

    upsert = await asyncio.to_thread(
        _command, gateway, "users.upsert", "door-1", "--json", "--id", "cli-1", "--args",
        json.dumps({"users": [{"user_id": "31", "name": "From the shell"}]}),
    )  # fmt: skip
    assert upsert.returncode == 0, upsert.stderr
    assert json.loads(upsert.stdout.splitlines()[-1])["result"] == {"created": ["31"], "updated": []}
    again = await asyncio.to_thread(
        _command, gateway, "users.upsert", "door-1", "--id", "cli-1", "--arg", "users=[]"
    )
    assert again.returncode == 0 and "(repeat)" in again.stdout  # the stored answer, not a second run

    misfit = await asyncio.to_thread(
        _command,
        gateway,
        "users.upsert",
        "door-1",
        "--arg",
        'users=[{"user_id": "32", "name": "' + "x" * 30 + '"}]',
    )
    assert misfit.returncode == 1 and "user_does_not_fit" in misfit.stdout
    refused = await asyncio.to_thread(_command, gateway, "device.explode", "door-1")
    assert refused.returncode == 1 and "unknown_command" in refused.stdout
    status = await asyncio.to_thread(_command, gateway, "gateway.status", "--json")
    assert (
        status.returncode == 0
        and json.loads(status.stdout.splitlines()[-1])["result"]["gateway"]["gateway_id"] == "gw-test"
    )
    nobody = await asyncio.to_thread(
        _command, gateway, "device.info", "door-1", "--gateway", "gw-none", "--timeout", "2"
    )
    assert nobody.returncode == 2 and "no final answer within 2 s" in nobody.stderr
