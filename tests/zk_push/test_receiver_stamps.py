"""Stamps that only moved forward are saved at most every STAMP_SAVE_EVERY seconds per
terminal; never late when it could cost a punch. Over real sockets with a real buffer (the rig
of test_receiver.py).

The interval is set by the tests (an hour, then none), so what is saved when does not depend on
how fast the machine is: the first stamp is saved at once, later forward ones wait for an upload
or heartbeat after the interval or the listener's close, a stamp that went back never waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from punchgate.drivers.zk_push import stamps
from tests.zk_push.test_receiver import SN, PushRig, open_rig, push_terminal, rig_settings


def attlog(*minutes: int) -> bytes:
    return b"".join(f"7\t2026-03-02 08:{m:02d}:00\t0\t1\t0\t0\t0\n".encode() for m in minutes)


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PushRig]:
    monkeypatch.setattr(stamps, "STAMP_SAVE_EVERY", 3600.0)
    async with open_rig(tmp_path) as made:
        yield made


def saved_stamp(rig: PushRig) -> str | None:
    stamp: str | None = rig.meta("door-1").get("push_stamps", {}).get("ATTLOG")
    return stamp


async def handshake_stamp(rig: PushRig) -> str:
    status, text = await rig.handshake(SN)
    assert status == 200, text
    return dict(line.split("=", 1) for line in text.splitlines()[1:])["ATTLOGStamp"]


async def test_a_forward_stamp_waits_and_the_punches_do_not(
    rig: PushRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await rig.upload(SN, "ATTLOG", attlog(1, 2), stamp="2") == (200, "OK: 2")
    assert saved_stamp(rig) == "2"  # the first one is saved at once
    assert await rig.upload(SN, "ATTLOG", attlog(3, 4, 5), stamp="5") == (200, "OK: 3")
    assert len(rig.punches()) == 5  # committed before OK, whatever the stamp does
    assert saved_stamp(rig) == "2"  # waiting: saved late it is an older stamp, never a lost punch
    assert await handshake_stamp(rig) == "5"  # the terminal is told what was stored
    status, _, _ = await rig.request("GET", "/iclock/getrequest", {"SN": SN})
    assert status == 200
    assert saved_stamp(rig) == "2"  # a heartbeat within the interval saves nothing either
    monkeypatch.setattr(stamps, "STAMP_SAVE_EVERY", 0.0)  # the interval passed
    status, _, _ = await rig.request("GET", "/iclock/getrequest", {"SN": SN})
    assert status == 200
    assert saved_stamp(rig) == "5"


async def test_a_stamp_that_went_back_is_saved_before_ok(rig: PushRig) -> None:
    assert await rig.upload(SN, "ATTLOG", attlog(1), stamp="100") == (200, "OK: 1")
    assert await rig.upload(SN, "ATTLOG", attlog(2), stamp="200") == (200, "OK: 1")
    assert saved_stamp(rig) == "100"
    # The log started again: a saved 100 would make the terminal skip its records 13 to 100.
    assert await rig.upload(SN, "ATTLOG", attlog(3), stamp="12") == (200, "OK: 1")
    assert saved_stamp(rig) == "12"
    assert rig.raised("log_reset", "door-1")


async def test_bad_lines_are_saved_before_ok_with_the_stamp(rig: PushRig) -> None:
    assert await rig.upload(SN, "ATTLOG", attlog(1), stamp="1") == (200, "OK: 1")
    assert await rig.upload(SN, "ATTLOG", attlog(2) + b"NOT-A-RECORD\n", stamp="3") == (200, "OK: 1")
    meta = rig.meta("door-1")
    assert meta["push_stamps"]["ATTLOG"] == "3"
    assert [line["text"] for line in meta["push_unparsed"]] == ["NOT-A-RECORD"]


async def test_the_listener_saves_waiting_stamps_when_it_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stamps, "STAMP_SAVE_EVERY", 3600.0)
    rig = PushRig(rig_settings(tmp_path, [push_terminal("door-1", SN, timezone="Asia/Shanghai")]))
    await rig.service.start()
    rig.session = aiohttp.ClientSession()
    try:
        assert await rig.upload(SN, "ATTLOG", attlog(1), stamp="1") == (200, "OK: 1")
        assert await rig.upload(SN, "ATTLOG", attlog(2), stamp="2") == (200, "OK: 1")
        assert saved_stamp(rig) == "1"
        await rig.session.close()
        rig.session = None
        await rig.service.close()
        assert saved_stamp(rig) == "2"
    finally:
        if rig.session is not None:
            await rig.session.close()
        if rig.store is not None:
            rig.store.close()
            rig.store = None
