"""users.list and log.clear for a zk-push terminal, end to end: a real broker, the real gateway (its
own process and [push] listener) and the push-terminal emulator.

users.list answers at once from the user list the terminal uploaded (its protocol cannot read
users back) and says so; log.clear runs only where the entry allows it and the serial number is
repeated, and the terminal is made to upload what it holds (CHECK) before CLEAR LOG reaches it:
punches the terminal had not uploaded yet are in the gateway's buffer before its log is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from punchgate.gateway.mosquitto import free_port
from tests.commands.commander import Commander
from tests.commands.conftest import FAST, sections
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until_async
from tests.zk_push.test_commands_end_to_end import SN, emulator, push_terminal


def start(gateway_factory: Callable[..., GatewayProcess], **terminal: Any) -> int:
    push_port = free_port()
    push = {"bind": "127.0.0.1", "port": push_port}
    gateway = gateway_factory([push_terminal(**terminal)], mqtt=FAST, sections={**sections(), "push": push})
    gateway.start()
    return push_port


def buffered(buffer: Path) -> set[tuple[str, str, int]]:
    """(user id, local time, state) of every punch of door-1 in the gateway's buffer."""
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=30)) as db:
        rows = db.execute(
            "SELECT user_id, json_extract(payload, '$.local_time'), json_extract(payload, '$.state.code') "
            "FROM punches WHERE device = 'door-1'"
        ).fetchall()
    return {(user, local[:19], state) for user, local, state in rows}


async def test_users_list_answers_the_uploaded_roster(
    gateway_factory: Callable[..., GatewayProcess], central: Commander
) -> None:
    push_port = await asyncio.to_thread(start, gateway_factory)
    await central.alistening()
    terminal = emulator(push_port)
    terminal.enroll("7", "Li Wei", card="4242")
    terminal.enroll("8", "Ana")
    async with terminal:
        # The OPERLOG upload is answered once the roster is stored: then the stamp moves.
        await wait_until_async(
            lambda: terminal.op_stamp >= terminal.operlog[-1].seq, timeout=20, message="the OPERLOG upload"
        )
        listed = await central.arun("users.list", "door-1")
        assert listed["status"] == "ok", listed.payload
        result = listed["result"]
        assert result["count"] == 2 and result["source"] == "uploaded" and result["as_of"], result
        assert result["users"] == [
            {"user_id": "7", "name": "Li Wei", "privilege": "user", "card": None, "password_set": False},
            {"user_id": "8", "name": "Ana", "privilege": "user", "card": 0, "password_set": False},
        ]
        assert terminal.counters.commands == 0  # nothing was sent to the terminal for it


async def test_log_clear_is_guarded_and_uploads_before_it_clears(
    gateway_factory: Callable[..., GatewayProcess], central: Commander, tmp_path: Path
) -> None:
    # Not realtime, and a day between scheduled uploads: punches wait on the terminal until asked.
    push_port = await asyncio.to_thread(
        start, gateway_factory, clear_log=True, realtime=False, trans_interval=1440
    )
    await central.alistening()
    terminal = emulator(push_port)
    async with terminal:
        await wait_until_async(lambda: terminal.online, timeout=20, message="the terminal online")
        records = [terminal.punch("7", state=n) for n in range(3)]
        made = {("7", r.when.isoformat(sep="T"), r.state) for r in records}
        assert len(made) == 3
        assert not made & buffered(tmp_path / "buffer.db")  # still only on the terminal

        wrong = await central.arun("log.clear", "door-1", args={"serial": "NOT-" + SN})
        assert wrong["error"]["code"] == "serial_mismatch", wrong.payload
        assert len(terminal.records) == 3 and terminal.counters.commands == 0

        cleared = await central.arun("log.clear", "door-1", args={"serial": SN})
        assert cleared["status"] == "ok", cleared.payload
        assert cleared["result"] == {"cleared": True, "record_count_after": 0}
        assert terminal.records == []
        assert made <= buffered(tmp_path / "buffer.db")  # uploaded and stored before the clear


async def test_log_clear_needs_the_entry_to_allow_it_and_the_api_cannot_queue_it(
    gateway_factory: Callable[..., GatewayProcess], central: Commander
) -> None:
    push_port = await asyncio.to_thread(start, gateway_factory)
    await central.alistening()
    terminal = emulator(push_port)
    async with terminal:
        await wait_until_async(lambda: terminal.online, timeout=20, message="the terminal online")
        terminal.punch("7")
        refused = await central.arun("log.clear", "door-1", args={"serial": SN})
        assert refused["error"]["code"] == "clear_not_allowed", refused.payload
        assert "clear_log = true" in refused["error"]["message"]
        assert len(terminal.records) == 1 and terminal.counters.commands == 0
