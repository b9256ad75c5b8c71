"""The demo's gateway: the real daemon as a child process, and where to look at it.

`start_gateway` runs `python -m punchgate.gateway run` on the demo's config, logging JSON to
`gateway.log` in the demo's folder, with the comm key in the environment; `stop_gateway`
asks it to stop (SIGTERM) and kills it after 15 s. Before it starts, `console_account`
creates an admin account with a random password beside the buffer (the status page needs a
sign-in); `where_to_look` names the status page (with that account), /metrics and the status
command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from punchgate.gateway.console.accounts import Accounts
from punchgate.gateway.demo_config import COMM_KEY

CONSOLE_ACCOUNT = "admin"


def start_gateway(workdir: Path, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PUNCHGATE_COMM_KEY_GATE_SOUTH": str(COMM_KEY)}
    with (workdir / "gateway.log").open("ab") as gateway_log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "punchgate.gateway",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            stdout=gateway_log,
            stderr=gateway_log,
            env=env,
        )


async def stop_gateway(gateway: subprocess.Popen[bytes]) -> None:
    if gateway.poll() is None:
        gateway.send_signal(signal.SIGTERM)
        try:  # in a thread: the emulators, on this loop, must answer the gateway's goodbye
            await asyncio.to_thread(gateway.wait, 15)
        except subprocess.TimeoutExpired:
            gateway.kill()


def console_account(buffer: Path) -> str:
    """An admin account for the console (beside the buffer, as `punchgate user add` makes it),
    with a random password: the status page needs a sign-in. Returns the password."""
    password = secrets.token_urlsafe(12)
    Accounts.beside_buffer(buffer).add(CONSOLE_ACCOUNT, "admin", password)
    return password


def where_to_look(http_port: int, password: str) -> list[tuple[str, str]]:
    url = f"http://127.0.0.1:{http_port}"
    return [
        ("status page", f"{url}/  (sign in as {CONSOLE_ACCOUNT}, password {password})"),
        ("metrics", f"{url}/metrics"),
        ("status", f"{punchgate_command()} status --url {url}"),
    ]


def punchgate_command() -> str:
    """How to call `punchgate` from here: the name if PATH finds this one, else its path."""
    script = Path(sys.executable).parent / "punchgate"
    found = shutil.which("punchgate")
    if not script.exists() or (found is not None and Path(found).resolve() == script.resolve()):
        return "punchgate"
    with contextlib.suppress(ValueError):
        return str(script.absolute().relative_to(Path.cwd()))
    return str(script)
