"""Push-terminal commands end to end: the real daemon (its own process, its loopback API and its
[push] listener) and the push-terminal emulator over real sockets.

Each command of the vocabulary runs once on the terminal with its result recorded (also through
`punchgate push-command`); a command queued while the terminal is away runs when it is back; an
expired one never runs; a gateway SIGKILLed after the enqueue and again after the send but before
the result loses nothing and runs the command once; REBOOT ends an answer and the rest follows
after the terminal's return, at most `commands_per_answer` at a time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.gateway.mosquitto import free_port
from tests.support.gateway import REPO, GatewayProcess
from tests.support.waiting import wait_until_async

SN = "CKJT203460099"
ZONE = "Europe/Berlin"
FINAL = ("ok", "failed", "expired")


def push_terminal(**options: Any) -> dict[str, Any]:
    return {"type": "zk-push", "name": "door-1", "serial_number": SN, "timezone": ZONE, **options}


class Api:
    """The daemon's loopback API for push commands, with its token."""

    def __init__(self, session: aiohttp.ClientSession, port: int, token_file: Path) -> None:
        self.session, self.base, self.token_file = session, f"http://127.0.0.1:{port}", token_file

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    async def send(self, command: str, **body: Any) -> dict[str, Any]:
        url = f"{self.base}/api/push-commands/door-1"
        async with self.session.post(
            url, json={"command": command, **body}, headers=self._headers()
        ) as response:
            assert response.status == 201, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer

    async def commands(self) -> list[dict[str, Any]]:
        async with self.session.get(
            f"{self.base}/api/push-commands/door-1", headers=self._headers()
        ) as response:
            assert response.status == 200, await response.text()
            listed: list[dict[str, Any]] = (await response.json())["commands"]
            return listed

    async def metrics(self) -> str:
        async with self.session.get(f"{self.base}/metrics") as response:
            return await response.text()

    async def until_final(
        self, gateway: GatewayProcess, count: int, *, timeout: float = 60
    ) -> list[dict[str, Any]]:
        """Wait (polling the API) until `count` commands are final; them."""
        deadline = time.monotonic() + timeout
        while True:
            listed = await self.commands()
            if len(listed) >= count and all(c["status"] in FINAL for c in listed):
                return listed
            if time.monotonic() > deadline or gateway.exited() is not None:
                pytest.fail(f"commands not final in {timeout} s: {listed}\n{gateway.log_tail()}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def start(
    gateway_factory: Callable[..., GatewayProcess],
    session: aiohttp.ClientSession,
    tmp_path: Path,
    **terminal: Any,
) -> tuple[GatewayProcess, Api, int]:
    push_port, http_port = free_port(), free_port()
    gateway = gateway_factory(
        [push_terminal(**terminal)],
        sections={"push": {"bind": "127.0.0.1", "port": push_port}},
        http_port=http_port,
    )
    gateway.start()
    return gateway, Api(session, http_port, tmp_path / "api" / "token"), push_port


def emulator(push_port: int, **options: Any) -> ZkPushEmulator:
    defaults: dict[str, Any] = {
        "users": 0,
        "timezone": ZONE,
        "encoding": "utf-8",
        "delay": 0.3,
        "error_delay": 0.3,
        "reboot_seconds": 0.5,
        "request_timeout": 5.0,
    }
    return ZkPushEmulator(f"http://127.0.0.1:{push_port}", SN, **{**defaults, **options})


def punchgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchgate.gateway", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
    )


async def test_each_command_runs_once_and_its_result_is_recorded(
    gateway_factory: Callable[..., GatewayProcess], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gateway, api, push_port = start(gateway_factory, session, tmp_path)
    terminal = emulator(push_port)
    terminal.enroll("55", "Leaves Soon")
    async with terminal:
        await wait_until_async(lambda: terminal.online, timeout=20, message="the terminal online")
        handshakes = terminal.counters.handshakes
        sent = [
            await api.send("INFO"),
            await api.send("CHECK"),
            await api.send("SET OPTIONS DateTime=2026-03-02 08:00:00"),
            await api.send("DATA UPDATE USERINFO PIN=7\tName=Li Wei\tPri=14\tPasswd=1234"),
            await api.send("DATA DELETE USERINFO PIN=55"),
        ]
        assert [c["status"] for c in sent] == ["queued"] * 5
        assert sent[3]["command"] == "DATA UPDATE USERINFO PIN=7\tName=Li Wei\tPri=14\tPasswd=***"
        done = await api.until_final(gateway, 5)

        assert [(c["status"], c["returned"], c["sends"]) for c in done] == [("ok", 0, 1)] * 5
        assert [c["reply"] for c in done] == ["INFO", "CHECK", "SET OPTIONS", "DATA", "DATA"]
        assert done[0]["details"]["FWVersion"] == terminal.firmware
        assert terminal.counters.commands == 5  # each ran once
        assert terminal.users["7"].name == "Li Wei" and terminal.users["7"].privilege == 14
        assert "55" not in terminal.users
        assert abs(terminal.now() - dt.datetime(2026, 3, 2, 8, 0)) < dt.timedelta(minutes=2)
        await wait_until_async(
            lambda: terminal.counters.handshakes > handshakes, timeout=10, message="CHECK's new handshake"
        )

        # The command line, through the daemon's API with its token.
        config = str(gateway.config_path)
        waited = await asyncio.to_thread(
            punchgate, "push-command", "send", "door-1", "info", "-c", config, "--wait", "30"
        )
        assert waited.returncode == 0, waited.stderr
        assert "ok" in waited.stdout and "Return=0: done" in waited.stdout and "FWVersion=" in waited.stdout
        listed = await asyncio.to_thread(punchgate, "push-command", "list", "door-1", "-c", config)
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) == 6 and "Passwd=***" in listed.stdout
        refused = await asyncio.to_thread(punchgate, "push-command", "send", "nope", "info", "-c", config)
        assert refused.returncode == 1 and "is no terminal of this gateway" in refused.stderr
        assert terminal.counters.commands == 6

    # A result for an id the queue never gave is ignored, answered OK and counted.
    url = f"http://127.0.0.1:{push_port}/iclock/devicecmd"
    async with session.post(url, params={"SN": SN}, data=b"ID=999&Return=0&CMD=INFO\n") as response:
        assert (response.status, await response.text()) == (200, "OK")
    metrics = await api.metrics()
    assert 'punchgate_push_command_results_total{outcome="unknown"} 1.0' in metrics
    assert 'punchgate_push_command_results_total{outcome="ok"} 6.0' in metrics
    # The password never reaches the log: as a whole number, not digits inside a timestamp.
    assert not re.search(r"(?<![0-9])1234(?![0-9])", gateway.log_text())


async def test_a_command_queued_while_the_terminal_is_away_runs_when_it_is_back_and_an_expired_one_never(
    gateway_factory: Callable[..., GatewayProcess], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gateway, api, push_port = start(gateway_factory, session, tmp_path)
    await api.send("DATA UPDATE USERINFO PIN=7\tName=Back Again")
    short = await api.send("REBOOT", expires_in=1)

    async def short_status() -> str:
        return str(next(c["status"] for c in await api.commands() if c["id"] == short["id"]))

    deadline = time.monotonic() + 20
    while await short_status() != "expired":
        assert time.monotonic() < deadline, "the short command did not expire"
        await asyncio.sleep(0.2)

    terminal = emulator(push_port)
    async with terminal:
        done = await api.until_final(gateway, 2)
        beats = terminal.counters.heartbeats
        await wait_until_async(
            lambda: terminal.counters.heartbeats >= beats + 3, timeout=20, message="heartbeats"
        )
    assert [(c["status"], c["sends"]) for c in done] == [("ok", 1), ("expired", 0)]
    assert terminal.users["7"].name == "Back Again"
    assert terminal.counters.commands == 1 and terminal.counters.reboots == 0  # the expired REBOOT never ran


async def test_a_gateway_killed_before_and_after_sending_runs_the_command_once(
    gateway_factory: Callable[..., GatewayProcess],
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway, api, push_port = start(gateway_factory, session, tmp_path)
    queued = await api.send("DATA UPDATE USERINFO PIN=7\tName=Once")
    gateway.kill()  # between the enqueue and the send: the queue is in the buffer
    gateway.start()

    terminal = emulator(push_port)
    post_results = terminal.session.post_results
    killing: list[bool] = []
    killed: list[bool] = []

    async def kill_the_gateway_first() -> None:
        # The terminal has run the command; the gateway dies before its result arrives.
        if not killing:
            killing.append(True)
            await asyncio.to_thread(gateway.kill)
            killed.append(True)
        await post_results()

    monkeypatch.setattr(terminal.session, "post_results", kill_the_gateway_first)
    async with terminal:
        await wait_until_async(lambda: bool(killed), timeout=30, message="the command run and the kill")
        assert terminal.counters.commands == 1
        await asyncio.to_thread(gateway.start)
        (done,) = await api.until_final(gateway, 1)
    assert done["id"] == queued["id"]
    assert (done["status"], done["sends"]) == ("ok", 1)  # the result posted late, nothing sent again
    assert terminal.counters.commands == 1 and terminal.users["7"].name == "Once"
    assert gateway.events("push_commands_loaded")[-1]["waiting"] == 1


async def test_reboot_ends_an_answer_and_the_rest_follows_after_the_terminal_is_back(
    gateway_factory: Callable[..., GatewayProcess], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gateway, api, push_port = start(gateway_factory, session, tmp_path, commands_per_answer=3)
    for text in ("INFO", "REBOOT", "CHECK", "INFO", "INFO", "INFO"):
        await api.send(text)
    terminal = emulator(push_port)
    async with terminal:
        done = await api.until_final(gateway, 6)
    assert [(c["status"], c["sends"]) for c in done] == [("ok", 1)] * 6
    assert [e["ids"] for e in gateway.events("push_commands_sent")] == [[1, 2], [3, 4, 5], [6]]
    assert terminal.counters.reboots == 1 and terminal.counters.commands == 6
    reboot_done = dt.datetime.fromisoformat(done[1]["finished_at"])
    assert all(dt.datetime.fromisoformat(c["sent_at"]) >= reboot_done for c in done[2:])
