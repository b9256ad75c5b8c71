"""Remote commands end to end: a central commander -> mosquitto -> `punchgate run` -> emulated ZK
terminals, and back. Every command, the answers' shape (strict schemas), MQTT 5 correlation,
and the audit trail."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.commands.commander import Answer, Commander
from tests.commands.conftest import FAST, sections
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.schemas import validate
from tests.support.subscriber import Subscriber


def _strict(answer: Answer) -> None:
    validate("command-response", answer.payload)
    validate("strict/command-response", answer.payload)


def _ok(answer: Answer) -> dict[str, Any]:
    assert answer["status"] == "ok", answer.payload
    _strict(answer)
    result: dict[str, Any] = answer["result"]
    return result


def _error(answer: Answer, code: str) -> str:
    assert answer["status"] == "error" and answer["error"]["code"] == code, answer.payload
    _strict(answer)
    message: str = answer["error"]["message"]
    return message


async def test_every_command_on_zk_terminals(
    tmp_path: Path,
    gateway_factory: Callable[..., GatewayProcess],
    zk_emulators: Callable[..., Any],
    central: Commander,
    subscriber: Subscriber,
) -> None:
    door1, door2 = await zk_emulators(2, records=40)
    gateway = gateway_factory(
        [
            zk_terminal("door-1", door1, poll_interval=30, clear_log=True),
            zk_terminal("door-2", door2, poll_interval=30, live=False),
        ],
        mqtt=FAST,
        sections=sections(),
    )
    await asyncio.to_thread(gateway.start)
    await gateway.wait_until_async(
        lambda: subscriber.reconciler.records >= 80, timeout=60, message="the first reads"
    )
    await central.alistening()

    # device.info, fanned out: accepted once, then running and one final answer per terminal.
    request_id = central.send("device.info", terminals=["door-1", "door-2"])
    finals = await central.afinals(request_id, ["door-1", "door-2"], timeout=30)
    assert _ok(finals["door-1"])["serial_number"] == "CMD00000"
    assert _ok(finals["door-2"])["serial_number"] == "CMD00001"
    assert finals["door-2"]["result"]["user_count"] == 2
    statuses = [(a["terminal"], a["status"]) for a in central.answers(request_id)]
    assert statuses[0] == (None, "accepted") and statuses.count(("door-1", "running")) == 1
    accepted = central.answers(request_id)[0]
    _strict(accepted)
    assert accepted["result"]["terminals"] == ["door-1", "door-2"]
    assert all(a.correlation == request_id.encode() for a in central.answers(request_id))  # MQTT 5

    status = _ok(await central.arun("gateway.status"))
    assert status["gateway"]["gateway_id"] == "gw-test" and len(status["devices"]) == 2

    door2.add_punch("2")
    read = _ok(await central.arun("device.read_now", "door-2"))
    assert (read["records_read"], read["new"]) == (41, 1)

    # set_time: to a given instant (a minute ahead), then to the gateway's clock; bounded.
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)).isoformat()
    set_time = _ok(await central.arun("device.set_time", "door-2", args={"time": ahead}))
    assert abs((door2.now() - dt.datetime.now()).total_seconds() - 60) < 5, set_time
    _ok(await central.arun("device.set_time", "door-2"))
    assert abs((door2.now() - dt.datetime.now()).total_seconds()) < 5
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    assert "set_time_max_offset_seconds" in _error(
        await central.arun("device.set_time", "door-2", args={"time": far}), "time_out_of_bounds"
    )

    # users: list, upsert (one new, one changed), delete; a misfit changes nothing.
    listed = _ok(await central.arun("users.list", "door-1"))
    assert {u["user_id"]: u["name"] for u in listed["users"]} == {"1": "Alice", "2": "Bob"}
    upsert = {
        "users": [{"user_id": "2", "name": "Robert"}, {"user_id": "900", "name": "Eve", "password": "4321"}]
    }
    assert _ok(await central.arun("users.upsert", "door-1", args=upsert)) == {
        "created": ["900"],
        "updated": ["2"],
    }
    assert door1.data.user_by_id("900") is not None and door1.data.user_by_id("2").name == "Robert"
    too_long = {"users": [{"user_id": "901", "name": "Maximilian Alexander Smith"}]}
    message = _error(await central.arun("users.upsert", "door-1", args=too_long), "user_does_not_fit")
    assert "user '901'" in message and "26 bytes" in message and door1.data.user_by_id("901") is None
    deleted = _ok(await central.arun("users.delete", "door-1", args={"user_ids": ["900", "nobody"]}))
    assert deleted == {"deleted": ["900"], "not_found": ["nobody"]}

    # disable / enable
    assert _ok(await central.arun("device.disable", "door-2")) == {"enabled": False}
    assert door2.enabled is False
    assert _ok(await central.arun("device.enable", "door-2")) == {"enabled": True}
    assert door2.enabled is True

    # punches.resend: one terminal-local day, sent again with the original ids.
    day = door2.records[0].timestamp.date()
    before = len(subscriber.on("/devices/door-2/punches"))
    resent = _ok(await central.arun("punches.resend", "door-2", args={"day": day.isoformat()}))
    assert resent["requeued"] > 0
    await gateway.wait_until_async(
        lambda: len(subscriber.on("/devices/door-2/punches")) > before, timeout=20, message="the resent day"
    )

    # log.clear: only where the config allows it, only with the terminal's own serial.
    _error(await central.arun("log.clear", "door-2", args={"serial": "CMD00001"}), "clear_not_allowed")
    _error(await central.arun("log.clear", "door-1", args={"serial": "CMD99999"}), "serial_mismatch")
    door1.add_punch("1")  # door-1 clears after every read (clear_log): a new punch to clear
    await gateway.wait_until_async(lambda: door1.record_count == 1, timeout=10, message="a punch")
    cleared = _ok(await central.arun("log.clear", "door-1", args={"serial": "CMD00000"}))
    assert cleared["record_count_after"] == 0 and door1.record_count == 0

    # restart: the terminal reboots, the worker connects again.
    _ok(await central.arun("device.restart", "door-2"))
    assert door2.counters.restarts == 1
    await gateway.wait_until_async(
        lambda: door2.counters.sessions_served >= 2 and door2.session_active,
        timeout=30,
        message="a new session",
    )
    _ok(await central.arun("device.info", "door-2"))
    await asyncio.to_thread(gateway.stop)

    # Every command is in the audit chain with its requester, secrets masked.
    entries = _audit(tmp_path / "buffer.db")
    done = [e for e in entries if e["kind"] == "command_done"]
    assert {e["command"] for e in done} >= {
        "device.info", "gateway.status", "device.read_now", "device.set_time", "users.list", "users.upsert",
        "users.delete", "device.disable", "device.enable", "punches.resend", "log.clear", "device.restart",
    }  # fmt: skip
    assert all(e["requester"] == "test-central" for e in done)
    upserts = [e for e in entries if e["kind"] == "command_accepted" and e["command"] == "users.upsert"]
    assert upserts[0]["args"]["users"][1]["password"] == "***"
    # Done: masked in the buffer too. Looked for as the JSON string a leak would store, since the
    # bare digits may well occur inside a hash.
    assert b'"4321"' not in (tmp_path / "buffer.db").read_bytes()


def _audit(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        return [json.loads(entry) for (entry,) in db.execute("SELECT entry FROM audit ORDER BY seq")]


async def test_a_repeated_id_is_answered_from_the_buffer_and_never_run_twice(
    gateway_factory: Callable[..., GatewayProcess], zk_emulators: Callable[..., Any], central: Commander
) -> None:
    (door,) = await zk_emulators(1)
    gateway = gateway_factory([zk_terminal("door-1", door, poll_interval=30)], mqtt=FAST, sections=sections())
    await asyncio.to_thread(gateway.start)
    await central.alistening()
    args = {"users": [{"user_id": "77", "name": "Once"}]}
    request_id = central.send("users.upsert", terminals=["door-1"], args=args, request_id="upsert-77")
    first = await central.afinal(request_id, "door-1")
    assert _ok(first) == {"created": ["77"], "updated": []}
    writes = door.data.oplog_count

    central.send("users.upsert", terminals=["door-1"], args=args, request_id="upsert-77")
    await gateway.wait_until_async(
        lambda: any(a["repeat"] for a in central.answers("upsert-77")),
        timeout=20,
        message="the repeat's answer",
    )
    repeat = [a for a in central.answers("upsert-77") if a["repeat"]]
    assert len(repeat) == 1 and repeat[0]["result"] == first["result"] and repeat[0]["status"] == "ok"
    _strict(repeat[0])

    # Also after a restart: the buffer remembers.
    await asyncio.to_thread(gateway.stop)
    await asyncio.to_thread(gateway.start)
    await central.alistening()
    central.send("users.upsert", terminals=["door-1"], args=args, request_id="upsert-77")
    await gateway.wait_until_async(
        lambda: sum(a["repeat"] for a in central.answers("upsert-77")) == 2,
        timeout=20,
        message="answered again",
    )
    assert door.data.oplog_count == writes  # nothing written again
    assert [a["status"] for a in central.answers("upsert-77")].count("ok") == 3


async def test_expiry_and_waiting_for_an_offline_terminal(
    gateway_factory: Callable[..., GatewayProcess], zk_emulators: Callable[..., Any], central: Commander
) -> None:
    (door,) = await zk_emulators(1)
    gateway = gateway_factory(
        [zk_terminal("door-1", door, poll_interval=2, timeout=1)], mqtt=FAST, sections=sections()
    )
    await asyncio.to_thread(gateway.start)
    await gateway.wait_until_async(lambda: door.session_active, timeout=30, message="connected")
    await central.alistening()
    await door.set_fault("refuse_connections")
    await door.set_fault("restart", downtime=0)  # drop the session: the terminal is offline now

    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).isoformat()
    expiring = central.send("device.info", terminals=["door-1"], expires_at=soon)
    waiting = central.send(
        "users.upsert", terminals=["door-1"], args={"users": [{"user_id": "55", "name": "Later"}]}
    )
    expired = await central.afinal(expiring, "door-1", timeout=30)
    assert expired["status"] == "expired" and expired["error"] is None
    _strict(expired)
    assert [a["status"] for a in central.answers(waiting)] == ["accepted"]  # still waiting

    await door.clear_fault("refuse_connections")
    done = await central.afinal(waiting, "door-1", timeout=60)
    assert _ok(done) == {"created": ["55"], "updated": []}
    assert door.data.user_by_id("55") is not None
    assert [a["status"] for a in central.answers(waiting)] == ["accepted", "running", "ok"]


async def test_a_gateway_killed_between_request_and_answer_answers_once_after_restart(
    gateway_factory: Callable[..., GatewayProcess], zk_emulators: Callable[..., Any], central: Commander
) -> None:
    door, slow = await zk_emulators(2)
    gateway = gateway_factory(
        [
            zk_terminal("door-1", door, poll_interval=2, timeout=1),
            zk_terminal("slow", slow, poll_interval=30, timeout=5, clear_log=True),
        ],
        mqtt=FAST,
        sections=sections(),
    )
    await asyncio.to_thread(gateway.start)
    await gateway.wait_until_async(
        lambda: door.session_active and slow.session_active, timeout=30, message="up"
    )
    await central.alistening()
    await door.set_fault("refuse_connections")
    await door.set_fault("restart", downtime=0)

    # A repeatable command waits for its offline terminal; a clear is running on a slow one.
    waiting = central.send("users.upsert", terminals=["door-1"], args={"users": [{"user_id": "66"}]})
    await slow.set_fault("slow_replies", delay=2)
    clearing = central.send("log.clear", terminals=["slow"], args={"serial": slow.serial_number})
    await gateway.wait_until_async(
        lambda: any(a["status"] == "running" for a in central.answers(clearing)) and central.answers(waiting),
        timeout=30,
        message="the clear running, the upsert accepted",
    )
    await asyncio.to_thread(gateway.kill)  # SIGKILL: no goodbye, nothing flushed
    await slow.clear_fault("slow_replies")
    await door.clear_fault("refuse_connections")
    await asyncio.to_thread(gateway.start)

    done = await central.afinal(waiting, "door-1", timeout=60)
    assert _ok(done) == {"created": ["66"], "updated": []}
    interrupted = await central.afinal(clearing, "slow", timeout=30)
    assert "may or may not have taken effect" in _error(interrupted, "interrupted")
    await central.alistening()  # answered after everything the restart published before it
    for request_id, terminal in ((waiting, "door-1"), (clearing, "slow")):
        finals = [
            a
            for a in central.answers(request_id)
            if a["terminal"] == terminal and a["status"] in ("ok", "error")
        ]
        assert len(finals) == 1, [a.payload for a in central.answers(request_id)]
