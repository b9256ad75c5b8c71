"""The durable push-command queue (gateway/push_commands.py) on its own: a dict stands in for the
buffer's device meta (stored as JSON, as the buffer does), and the clock is the test's. The
end-to-end tests (test_commands_end_to_end.py) run the same rules in the real daemon."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from punchgate.drivers.zk_push import commands
from punchgate.drivers.zk_push.backend import PushTerminal
from punchgate.gateway.push_command_book import MAX_FINISHED_KEPT
from punchgate.gateway.push_commands import PushCommandError, PushCommandQueue

T0 = 1_800_000_000.0


class Meta:
    """The buffer's device meta: JSON text by key, so only what survives a restart survives."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.saves = 0
        self.fail = False

    async def load(self, key: str) -> dict[str, Any]:
        text = self.data.get(key)
        value: dict[str, Any] = json.loads(text) if text else {}
        return value

    async def save(self, key: str, data: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("disk I/O error")
        self.saves += 1
        self.data[key] = json.dumps(data)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def terminal(name: str = "door-1", **options: Any) -> PushTerminal:
    return PushTerminal(name=name, serial_number="SN-" + name, timezone="Europe/Berlin", **options)


async def make_queue(
    meta: Meta, clock: Clock, terminals: list[PushTerminal] | None = None, **options: Any
) -> PushCommandQueue:
    queue = PushCommandQueue(
        terminals or [terminal()], load=meta.load, save=meta.save, clock=clock, **options
    )
    await queue.load()
    return queue


def ids(lines: list[str]) -> list[int]:
    return [int(line.split(":", 2)[1]) for line in lines]


def result(wire_id: int | str, code: int | None = 0, cmd: str = "INFO") -> commands.Result:
    return commands.Result(str(wire_id), code, cmd, {})


async def test_a_command_goes_out_once_and_its_result_is_recorded() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    command_id = await queue.enqueue("door-1", "INFO", expires_at=T0 + 60)
    assert command_id == "door-1/1"
    status = queue.status(command_id)
    assert status is not None and status.status == "queued"

    lines = await queue.next_batch("door-1")
    assert lines == ["C:1:INFO"]
    status = queue.status(command_id)
    assert status is not None and (status.status, status.sends, status.sent_at) == ("sent", 1, T0)
    assert await queue.next_batch("door-1") == []  # in flight: not sent again at once

    waiter = asyncio.ensure_future(queue.result(command_id))
    await queue.record_results("door-1", [commands.Result("1", 0, "INFO", {"FWVersion": "Ver 8"})])
    done = await asyncio.wait_for(waiter, 5)
    assert (done.status, done.returned, done.meaning, done.details) == (
        "ok",
        0,
        "done",
        {"FWVersion": "Ver 8"},
    )
    assert await queue.next_batch("door-1") == []
    assert queue.counts["ok"] == 1


async def test_a_negative_return_is_a_failure_with_its_meaning() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    command_id = await queue.enqueue("door-1", commands.delete_user("7"), expires_at=T0 + 60)
    await queue.next_batch("door-1")
    await queue.record_results("door-1", [result(1, -1002, "DATA")])
    done = await queue.result(command_id)
    assert (done.status, done.returned, done.meaning) == ("failed", -1002, "not supported by this terminal")


async def test_unknown_and_duplicate_results_are_ignored_and_counted() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    command_id = await queue.enqueue("door-1", "INFO", expires_at=T0 + 60)
    await queue.next_batch("door-1")
    await queue.record_results("door-1", [result(99), result("x"), result(1), result(1, -3)])
    done = queue.status(command_id)
    assert done is not None and (done.status, done.returned) == ("ok", 0)  # the first result holds
    assert (queue.counts["unknown"], queue.counts["duplicate"], queue.counts["ok"]) == (2, 1, 1)
    await queue.record_results("elsewhere", [result(1)])  # a terminal without a queue
    assert queue.counts["unknown"] == 3


async def test_at_most_n_per_answer_in_order_and_nothing_after_reboot() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock, [terminal(commands_per_answer=2)])
    for text in ("INFO", "CHECK", "INFO", "REBOOT", "INFO", "CHECK"):
        await queue.enqueue("door-1", text, expires_at=T0 + 600)
    first = await queue.next_batch("door-1")
    assert ids(first) == [1, 2]
    await queue.record_results("door-1", [result(1), result(2, cmd="CHECK")])
    second = await queue.next_batch("door-1")
    assert ids(second) == [3, 4] and second[-1] == "C:4:REBOOT"
    await queue.record_results("door-1", [result(3), result(4, cmd="REBOOT")])
    assert ids(await queue.next_batch("door-1")) == [5, 6]


async def test_reboot_ends_the_answer_even_below_the_limit() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    for text in ("INFO", "REBOOT", "INFO"):
        await queue.enqueue("door-1", text, expires_at=T0 + 600)
    assert await queue.next_batch("door-1") == ["C:1:INFO", "C:2:REBOOT"]


async def test_an_answer_without_a_result_is_sent_again_after_a_heartbeat_and_resend_after() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock, resend_after=30)
    await queue.enqueue("door-1", "INFO", expires_at=T0 + 600)
    await queue.enqueue("door-1", "CHECK", expires_at=T0 + 600)
    assert ids(await queue.next_batch("door-1")) == [1, 2]
    clock.now += 40
    # The first heartbeat after the send is answered without them, however long it took: a
    # terminal that ran them but could not post the results posts them now.
    assert await queue.next_batch("door-1") == []
    assert ids(await queue.next_batch("door-1")) == [1, 2]
    status = queue.status("door-1/1")
    assert status is not None and status.sends == 2
    clock.now += 10
    assert await queue.next_batch("door-1") == []  # resend_after again
    assert await queue.next_batch("door-1") == []


async def test_an_in_flight_command_holds_back_what_was_queued_after_it() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock, resend_after=0)
    await queue.enqueue("door-1", commands.update_user("7", name="Ann"), expires_at=T0 + 600)
    assert ids(await queue.next_batch("door-1")) == [1]
    await queue.enqueue("door-1", commands.delete_user("7"), expires_at=T0 + 600)
    assert await queue.next_batch("door-1") == []  # the delete must not overtake the update
    assert ids(await queue.next_batch("door-1")) == [1, 2]


async def test_expired_commands_are_never_sent_and_answer_the_waiter() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    never = await queue.enqueue("door-1", "REBOOT", expires_at=T0 + 5)
    sent = await queue.enqueue("door-1", "INFO", expires_at=T0 + 100)
    waiter = asyncio.ensure_future(queue.result(never))
    clock.now += 6
    assert await queue.expire_due() == 1
    gone = await asyncio.wait_for(waiter, 5)
    assert (gone.status, gone.meaning) == ("expired", "never sent: the terminal did not ask in time")
    assert ids(await queue.next_batch("door-1")) == [2]
    clock.now += 100
    assert await queue.next_batch("door-1") == []  # expires at this heartbeat: not sent again
    status = queue.status(sent)
    assert status is not None and (status.status, status.meaning) == (
        "expired",
        "no result before it expired",
    )
    # A result after expiry is kept aside; the final status stays.
    await queue.record_results("door-1", [result(2)])
    status = queue.status(sent)
    assert status is not None and status.status == "expired"
    assert status.late_result is not None and status.late_result["returned"] == 0
    assert queue.counts["late"] == 1


async def test_the_queue_survives_a_restart_and_ids_are_never_reused() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    await queue.enqueue("door-1", "INFO", expires_at=T0 + 600)
    await queue.enqueue("door-1", commands.update_user("7", name="Ann", password="1234"), expires_at=T0 + 600)
    assert ids(await queue.next_batch("door-1")) == [1, 2]
    await queue.record_results("door-1", [result(1)])

    again = await make_queue(meta, clock)  # a new process: only what was stored
    one, two = (again.status(f"door-1/{n}") for n in (1, 2))
    assert one is not None and one.status == "ok"
    assert two is not None and (two.status, two.sends) == ("sent", 1)
    assert two.command == "DATA UPDATE USERINFO PIN=7\tName=Ann\tPasswd=***"
    assert await again.next_batch("door-1") == []  # first heartbeat: room for a pending result
    await again.record_results("door-1", [result(2, cmd="DATA")])
    two = again.status("door-1/2")
    assert two is not None and two.status == "ok"
    assert "1234" not in meta.data["door-1/commands"]  # the password went once it was done
    assert await again.enqueue("door-1", "CHECK", expires_at=T0 + 600) == "door-1/3"


async def test_set_time_now_is_written_when_sent_in_the_terminal_s_zone() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    await queue.enqueue("door-1", commands.set_time(), expires_at=T0 + 600)
    clock.now = 1_767_225_600.0  # 2026-01-01T00:00:00Z, 01:00 in Berlin
    (line,) = await queue.next_batch("door-1")
    assert line == f"C:1:SET OPTIONS DateTime={commands.pack_time(dt.datetime(2026, 1, 1, 1, 0))}"
    status = queue.status("door-1/1")
    assert status is not None and status.command == "SET OPTIONS DateTime=now"  # as queued


async def test_what_the_queue_refuses() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock, [terminal(), terminal("unknown-X1", quarantined=True)])
    cases: list[tuple[str, str, float, str]] = [
        ("door-9", "INFO", T0 + 60, "unknown_terminal"),
        ("unknown-X1", "INFO", T0 + 60, "unknown_terminal"),  # quarantined terminals take none
        ("door-1", "CLEAR LOG", T0 + 60, "bad_command"),
        ("door-1", "INFO", T0, "expired"),
        ("door-1", "INFO", T0 + 31 * 86400, "expired"),
    ]
    for device, text, expires_at, code in cases:
        with pytest.raises(PushCommandError) as raised:
            await queue.enqueue(device, text, expires_at=expires_at)
        assert raised.value.code == code, (device, text)
    gb = await make_queue(meta, clock, [terminal("door-gb", encoding="gbk")])
    with pytest.raises(PushCommandError, match="encoding"):
        await gb.enqueue("door-gb", commands.update_user("7", name="Zoë 🙂"), expires_at=T0 + 60)
    meta.fail = True
    with pytest.raises(PushCommandError) as raised:
        await queue.enqueue("door-1", "INFO", expires_at=T0 + 60)
    assert raised.value.code == "unavailable"
    assert queue.list_commands("door-1") == []  # nothing half-stored


async def test_a_failed_store_sends_nothing() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock)
    await queue.enqueue("door-1", "INFO", expires_at=T0 + 60)
    meta.fail = True
    with pytest.raises(OSError):
        await queue.next_batch("door-1")
    status = queue.status("door-1/1")
    assert status is not None and status.status == "queued"  # what is in memory is what is stored
    meta.fail = False
    assert await queue.next_batch("door-1") == ["C:1:INFO"]


async def test_finished_commands_are_kept_for_a_while_only() -> None:
    meta, clock = Meta(), Clock()
    queue = await make_queue(meta, clock, [terminal(commands_per_answer=100)])
    total = MAX_FINISHED_KEPT + 20
    for _ in range(total):
        await queue.enqueue("door-1", "INFO", expires_at=T0 + 600)
    while lines := await queue.next_batch("door-1"):
        await queue.record_results("door-1", [result(n) for n in ids(lines)])
    kept = queue.list_commands("door-1")
    assert len(kept) == MAX_FINISHED_KEPT and kept[0].wire_id == 21
    assert queue.status("door-1/1") is None


async def test_clear_log_only_from_the_guarded_remote_command() -> None:
    queue = await make_queue(Meta(), Clock())
    with pytest.raises(PushCommandError, match="only by the log\\.clear remote command") as raised:
        await queue.enqueue("door-1", commands.clear_log(), expires_at=T0 + 60)
    assert raised.value.code == "bad_command" and queue.list_commands("door-1") == []
    cleared = await queue.enqueue("door-1", commands.clear_log(), expires_at=T0 + 60, clearing=True)
    assert (await queue.next_batch("door-1")) == [f"C:1:{commands.clear_log()}"]
    status = queue.status(cleared)
    assert status is not None and status.kind == "clear_log" and status.status == "sent"
