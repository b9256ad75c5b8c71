"""End to end: emulated ZK terminals → the real daemon → SQLite buffer → mosquitto → a subscriber.

Real sockets, a real broker, a real SQLite file, the daemon as its own process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.reconcile import buffer_rows
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until_async
from tests.support.zk import expected_ids, listening_for_punches


def records_by_id(subscriber: Subscriber) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for message in list(subscriber.messages):
        if message.topic.endswith("/punches"):
            for record in message.json()["records"]:
                out[record["id"]] = record
    return out


async def test_fifty_terminals_with_live_punches_every_punch_once(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    terminals: list[ZkEmulator] = await emulators(50, records=1000)
    gateway = gateway_factory(
        [zk_terminal(f"t{i:02d}", e, poll_interval=30) for i, e in enumerate(terminals)]
    )
    gateway.start()
    expected = {i for e in terminals for i in expected_ids(e)}
    assert len(expected) == 50 * 1000
    missing = await subscriber.missing_after(expected, timeout=180)
    assert not missing, f"{len(missing)} punches never arrived"

    # Live punches while the daemon listens: they arrive without waiting for the 30 s poll.
    # (A punch made before a worker registered for events would wait for that poll, rightly.)
    await wait_until_async(
        lambda: all(listening_for_punches(e) for e in terminals[::5]),
        timeout=60,
        message="workers registered for live punches",
    )
    for emulator in terminals[::5]:
        emulator.add_punch("7", state=1, verify=15)
    live = {i for e in terminals[::5] for i in expected_ids(e)[-1:]}
    assert not await subscriber.missing_after(live, timeout=20)

    rows, distinct = buffer_rows(tmp_path / "buffer.db")
    assert rows == distinct == len(expected) + len(live)


async def test_restart_mid_run_loses_nothing_and_duplicates_no_row(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    terminals: list[ZkEmulator] = await emulators(4, records=3000)
    gateway = gateway_factory([zk_terminal(f"t{i}", e, poll_interval=2) for i, e in enumerate(terminals)])
    gateway.start()
    # Crash it as soon as the first punches are flowing.
    await gateway.wait_until_async(lambda: subscriber.reconciler.seen, timeout=60, message="first punches")
    await asyncio.to_thread(gateway.kill)
    for emulator in terminals:
        emulator.add_punch("3", state=0, verify=1)  # punches while the gateway is down

    def reads() -> int:  # whole reads, and reads of what a log added since the last one stored
        return len(gateway.events("full_read")) + len(gateway.events("tail_read"))

    done = reads()
    gateway.start()
    # A clean stop in the middle of the run: once the restarted daemon has finished a read.
    await gateway.wait_until_async(lambda: reads() > done, timeout=60)
    assert await asyncio.to_thread(gateway.stop) == 0
    gateway.start()
    expected = {i for e in terminals for i in expected_ids(e)}
    assert not await subscriber.missing_after(expected, timeout=90)
    rows, distinct = buffer_rows(tmp_path / "buffer.db")
    assert rows == distinct == len(expected)


async def test_faulty_terminals_do_not_hold_up_the_working_ones(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
) -> None:
    (healthy,) = await emulators(1, records=500)
    (dropper,) = await emulators(1, records=3000)
    await dropper.set_fault("drop_mid_transfer")
    (hanger,) = await emulators(1, records=100)
    await hanger.set_fault("hang")
    (locked,) = await emulators(1, records=100, comm_key=1234)
    (bw,) = await emulators(1, records=300, profile="bw", transports=("udp",))
    gateway = gateway_factory(
        [
            zk_terminal("healthy", healthy, poll_interval=30),
            zk_terminal("dropper", dropper, poll_interval=30, timeout=3),
            zk_terminal("hanger", hanger, poll_interval=30, timeout=2),
            zk_terminal("locked", locked, poll_interval=30, comm_key="9999"),
            zk_terminal("bw", bw, transport="udp", poll_interval=30),
        ]
    )
    gateway.start()
    working = set(expected_ids(healthy)) | set(expected_ids(bw))
    assert not await subscriber.missing_after(working, timeout=60)
    # The broken ones delivered nothing they could not read completely; nothing from the
    # locked terminal got in without its key.
    assert not set(expected_ids(locked)) & subscriber.reconciler.seen
    assert not set(expected_ids(hanger)) & subscriber.reconciler.seen
    # A read cut off mid-transfer is a failed pass: nothing from it is trusted.
    assert not set(expected_ids(dropper)) & subscriber.reconciler.seen
    # Once the fault is gone, the dropper's log arrives in full.
    await dropper.clear_fault("drop_mid_transfer")
    assert not await subscriber.missing_after(set(expected_ids(dropper)), timeout=90)


@pytest.mark.parametrize(
    "records",
    [
        20_000,  # the short run: a log of tens of thousands, as a site with clearing off holds
        pytest.param(100_000, marks=pytest.mark.long),  # ./dev test-long: the full 100k
    ],
)
async def test_one_terminal_with_a_big_log_is_read_completely(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    tmp_path: Path,
    records: int,
) -> None:
    (big,) = await emulators(1, records=records, users=300)
    gateway = gateway_factory([zk_terminal("big", big, live=False, poll_interval=600)])
    started = time.monotonic()
    gateway.start()
    expected = set(expected_ids(big))
    assert len(expected) == records
    assert not await subscriber.missing_after(expected, timeout=240)
    elapsed = time.monotonic() - started
    rows, distinct = buffer_rows(tmp_path / "buffer.db")
    assert rows == distinct == len(expected)
    print(f"\n{records:,} records: read, committed and delivered in {elapsed:.1f} s")


async def test_live_punch_arrives_without_waiting_for_a_poll(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
) -> None:
    (tft,) = await emulators(1, records=10)
    (bw,) = await emulators(1, records=10, profile="bw", transports=("udp",))
    gateway = gateway_factory(
        [
            zk_terminal("tft", tft, poll_interval=3600),
            zk_terminal("bw", bw, transport="udp", poll_interval=3600),
        ]
    )
    gateway.start()
    assert not await subscriber.missing_after(set(expected_ids(tft)) | set(expected_ids(bw)), timeout=30)
    await wait_until_async(
        lambda: listening_for_punches(tft) and listening_for_punches(bw),
        timeout=10,
        message="the workers registered for live punches after their first read",
    )
    for emulator in (tft, bw):
        sent = time.monotonic()
        emulator.add_punch("5", state=0, verify=1)
        new = expected_ids(emulator)[-1]
        assert not await subscriber.missing_after({new}, timeout=10)
        record = records_by_id(subscriber)[new]
        assert record["source"] == "live" and record["historical"] is False
        print(
            f"\nlive punch on {emulator.serial_number}: {1000 * (time.monotonic() - sent):.0f} ms to subscriber"
        )


async def test_timezones_and_dst_give_correct_utc_and_flags(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
) -> None:
    (shanghai,) = await emulators(1)
    (berlin,) = await emulators(1)
    shanghai.add_user("1")
    berlin.add_user("2")
    berlin.add_user("3")
    shanghai.add_punch("1", when=dt.datetime(2026, 3, 29, 9, 0, 0), state=0, verify=1)
    berlin.add_punch(
        "2", when=dt.datetime(2026, 3, 29, 1, 30, 0), state=0, verify=1
    )  # before the spring jump
    berlin.add_punch("2", when=dt.datetime(2026, 3, 29, 2, 30, 0), state=1, verify=1)  # in the gap
    berlin.add_punch("3", when=dt.datetime(2026, 10, 25, 2, 30, 0), state=0, verify=1)  # in the fold
    berlin.add_punch("3", when=dt.datetime(2026, 10, 25, 12, 0, 0), state=1, verify=1)  # after: winter time
    gateway = gateway_factory(
        [
            zk_terminal("sh", shanghai, timezone="Asia/Shanghai", live=False),
            zk_terminal("be", berlin, timezone="Europe/Berlin", live=False),
        ],
        timezone="UTC",
    )
    gateway.start()
    ids = expected_ids(shanghai) + expected_ids(berlin)
    assert not await subscriber.missing_after(set(ids), timeout=30)
    got = records_by_id(subscriber)
    summary = [(got[i]["local_time"], got[i]["utc_time"], got[i]["utc_offset"], got[i]["flags"]) for i in ids]
    assert summary == [
        ("2026-03-29T09:00:00", "2026-03-29T01:00:00Z", "+08:00", []),
        ("2026-03-29T01:30:00", "2026-03-29T00:30:00Z", "+01:00", []),
        ("2026-03-29T02:30:00", "2026-03-29T01:30:00Z", "+02:00", ["dst_gap"]),
        ("2026-10-25T02:30:00", "2026-10-25T00:30:00Z", "+02:00", ["dst_fold"]),
        ("2026-10-25T12:00:00", "2026-10-25T11:00:00Z", "+01:00", []),
    ]
