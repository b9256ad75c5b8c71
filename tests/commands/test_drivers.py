"""The driver side of remote commands, against the emulators over real sockets: users (list,
upsert with the fit checked before sending, delete), enable/disable and restart; and what the
Anviz protocol cannot do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from punchgate.drivers.anviz import staff
from punchgate.drivers.anviz.driver import AnvizDriver
from punchgate.drivers.anviz.emulator import EmulatedTerminal, TcpServer
from punchgate.drivers.anviz.endpoint import parse_endpoint
from punchgate.drivers.base import Administered, CommandUnsupportedError, TerminalUser
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.waiting import wait_until_async


def _zk_config(emulator: ZkEmulator, transport: str = "tcp", **extra: object) -> ZkTerminal:
    port = emulator.tcp_port if transport == "tcp" else emulator.udp_port
    return ZkTerminal.model_validate(
        {
            "name": "zk1",
            "type": "zk",
            "host": "127.0.0.1",
            "port": port,
            "transport": transport,
            "timeout": 2.0,
            **extra,
        }
    )


@pytest.fixture
async def zk_pair() -> AsyncIterator[tuple[ZkEmulator, ZkDriver]]:
    emulator = ZkEmulator(profile="tft", serial_number="CMDZK1", text_encoding="gbk")
    emulator.add_user("1", name="Alice", privilege=14, card=111)
    emulator.add_user("2", name="Bob")
    await emulator.start()
    driver = ZkDriver(_zk_config(emulator, encoding="gbk"))
    await driver.connect()
    try:
        yield emulator, driver
    finally:
        await driver.close()
        await emulator.stop()


async def test_zk_users_list_upsert_and_delete(zk_pair: tuple[ZkEmulator, ZkDriver]) -> None:
    emulator, driver = zk_pair
    assert isinstance(driver, Administered)
    listed = {u.user_id: u for u in await driver.list_users()}
    assert listed["1"].privilege == "admin" and listed["1"].card == 111 and listed["2"].name == "Bob"

    changed = await driver.upsert_users(
        [
            TerminalUser(user_id="2", name="Robert", card=222),  # changed: privilege kept
            TerminalUser(user_id="E-77", name="张伟", privilege="admin", password="1234"),  # new, GBK name
        ]
    )
    assert (changed.created, changed.updated, changed.problems) == (["E-77"], ["2"], [])
    bob = emulator.data.user_by_id("2")
    new = emulator.data.user_by_id("E-77")
    assert bob is not None and (bob.name, bob.card, bob.privilege) == ("Robert", 222, 0)
    assert new is not None and new.privilege == 14 and new.password == "1234" and new.uid not in (bob.uid, 1)
    assert {u.user_id: u.name for u in await driver.list_users()}["E-77"] == "张伟"

    deleted = await driver.delete_users(["1", "nobody"])
    assert (deleted.deleted, deleted.not_found) == (["1"], ["nobody"])
    assert emulator.data.user_by_id("1") is None


async def test_zk_a_user_that_does_not_fit_stops_the_whole_upsert(
    zk_pair: tuple[ZkEmulator, ZkDriver],
) -> None:
    emulator, driver = zk_pair
    before = [(u.uid, u.name) for u in emulator.users]
    changed = await driver.upsert_users(
        [
            TerminalUser(user_id="3", name="Fits"),
            TerminalUser(user_id="4", name="欧阳娜娜欧阳娜娜欧阳娜娜欧"),  # 13 characters, 26 bytes in GBK
            TerminalUser(user_id="5", name="Zoë"),  # ë has no GBK code
        ]
    )
    assert [p.user_id for p in changed.problems] == ["4", "5"]
    assert "needs 26 bytes in gbk, the terminal keeps 24" in changed.problems[0].problem
    assert "cannot be written in the terminal's encoding gbk" in changed.problems[1].problem
    assert [(u.uid, u.name) for u in emulator.users] == before  # nothing was sent


async def test_zk_disable_enable_and_restart(zk_pair: tuple[ZkEmulator, ZkDriver]) -> None:
    emulator, driver = zk_pair
    await driver.set_enabled(False)
    assert emulator.enabled is False
    await driver.set_enabled(True)
    assert emulator.enabled is True
    await driver.restart()
    assert emulator.counters.restarts == 1
    await driver.close()  # the session is gone: no goodbye is attempted, nothing hangs


async def test_zk_black_and_white_terminals_keep_numeric_ids_and_short_names() -> None:
    emulator = ZkEmulator(profile="bw", serial_number="CMDBW1")
    await emulator.start()
    driver = ZkDriver(_zk_config(emulator, "udp"))
    await driver.connect()
    try:
        changed = await driver.upsert_users(
            [TerminalUser(user_id="A1", name="X"), TerminalUser(user_id="7", name="Christopher")]
        )
        assert [p.user_id for p in changed.problems] == ["A1", "7"]
        assert "numeric user ids" in changed.problems[0].problem
        assert "keeps 8" in changed.problems[1].problem
        ok = await driver.upsert_users([TerminalUser(user_id="7", name="Chris", password="12345")])
        assert ok.created == ["7"] and emulator.data.user_by_id("7") is not None
    finally:
        await driver.close()
        await emulator.stop()


@pytest.fixture
async def anviz_pair() -> AsyncIterator[tuple[EmulatedTerminal, AnvizDriver]]:
    terminal = EmulatedTerminal(3, serial_number="ANVIZ-CMD")
    terminal.add_history(30, users=12)  # punches enrol users 1000..1011
    server = TcpServer([terminal]).start()
    driver = AnvizDriver(
        name="az", endpoint=parse_endpoint(f"tcp://127.0.0.1:{server.port}"), device_id=3, timeout=0.5
    )
    await driver.connect()
    try:
        yield terminal, driver
    finally:
        await driver.close()
        server.stop()


async def test_anviz_users_over_the_staff_records(anviz_pair: tuple[EmulatedTerminal, AnvizDriver]) -> None:
    terminal, driver = anviz_pair
    assert isinstance(driver, Administered)
    listed = await driver.list_users()
    assert sorted(int(u.user_id) for u in listed) == list(range(1000, 1012))  # more than 8: two packets
    terminal.staff[1003] = staff.StaffRecord(user_id=1003, name="Old", fingers=0b11, card=5)

    changed = await driver.upsert_users(
        [
            TerminalUser(user_id="1003", name="Zoë Ångström"[:10]),
            TerminalUser(user_id="42", name="李娜", password="0042"),
        ]
    )
    assert (changed.created, changed.updated) == (["42"], ["1003"])
    kept = terminal.staff[1003]
    assert (kept.name, kept.fingers, kept.card) == ("Zoë Ångstr", 0b11, 5)  # fingerprints and card kept
    assert terminal.staff[42].password == "0042" and terminal.staff[42].name == "李娜"

    misfit = await driver.upsert_users(
        [TerminalUser(user_id="43", name="Bartholomew"), TerminalUser(user_id="44", privilege="admin")]
    )
    assert [p.user_id for p in misfit.problems] == ["43", "44"] and 43 not in terminal.staff
    assert "needs 22 bytes in UTF-16" in misfit.problems[0].problem

    deleted = await driver.delete_users(["42", "99999", "abc"])
    assert (deleted.deleted, deleted.not_found) == (["42"], ["99999", "abc"])


async def test_anviz_restart_and_what_it_cannot_do(anviz_pair: tuple[EmulatedTerminal, AnvizDriver]) -> None:
    terminal, driver = anviz_pair
    assert "no command to disable" in driver.cannot["set_enabled"]
    with pytest.raises(CommandUnsupportedError):
        await driver.set_enabled(False)
    await driver.restart()
    assert terminal.restarts == 1
    await driver.connect()  # the link was closed: a new session works
    await wait_until_async(lambda: terminal.requests_seen > 0, timeout=5)
    info = await asyncio.wait_for(driver.info(), 5)
    assert info.serial_number == "ANVIZ-CMD"


def test_the_staff_record_round_trips() -> None:
    record = staff.StaffRecord(user_id=2**40 - 1, name="王小明", password="007", card=None, fingers=0x3FF)
    data = record.encode()
    assert len(data) == 40 and data[5] >> 4 == 3 and data[8:12] == b"\xff\xff\xff\xff"
    assert staff.StaffRecord.decode(data) == record
    assert staff.decode_batch(staff.encode_batch([record, record])) == [record, record]
