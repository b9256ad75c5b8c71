"""Protocol 3.x as docs/zk-push.md ("Protocol 3.x") found it, over real sockets.

Attendance terminals announcing `pushver=3.1.2` speak the 2.x flow (handshake, ATTLOG lines):
they are served, and told their stamps under both names. The security (access-control)
protocol's endpoints are refused so that the device keeps its records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from tests.support.waiting import wait_until_async
from tests.support.zk_push import push_record_id
from tests.zk_push.test_receiver import SN, PushRig, open_rig

PUSHVER = "3.1.2"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[PushRig]:
    async with open_rig(tmp_path) as made:
        yield made


async def test_a_3x_handshake_names_the_stamps_both_ways(rig: PushRig) -> None:
    assert await rig.upload(SN, "ATTLOG", b"7\t2026-03-02 08:01:15\t0\t1\t0\n", stamp="41") == (200, "OK: 1")
    status, text = await rig.handshake(SN, pushver=PUSHVER)
    assert status == 200, text
    options = dict(line.split("=", 1) for line in text.splitlines()[1:])
    assert options["ATTLOGStamp"] == options["Stamp"] == "41"
    assert options["OPERLOGStamp"] == options["OpStamp"] == "0"
    lines = (await rig.handshake(SN, pushver="2.4.1"))[1].splitlines()  # 2.x: the 2.x names only
    assert "ATTLOGStamp=41" in lines and "Stamp=41" not in lines


async def test_a_3x_attendance_terminal_uploads_and_resumes(rig: PushRig) -> None:
    def emulator() -> ZkPushEmulator:
        return ZkPushEmulator(
            rig.base, SN, records=1_200, users=30, seed=3, pushver=PUSHVER, chunk_size=500, delay=300
        )

    first = emulator()
    last = first.records[-1].seq
    await first.start()
    try:
        await wait_until_async(lambda: first.stamp >= last, timeout=30, message="the 3.x upload acknowledged")
    finally:
        await first.stop()
    ids = {push_record_id(SN, r) for r in first.records}
    assert {p["id"] for p in rig.punches()} == ids
    second = emulator()  # the same terminal after a restart: resumes from the handshake's stamp
    await second.start()
    try:
        # The first heartbeat follows the upload phase (Delay is long: no other comes).
        await wait_until_async(lambda: second.counters.heartbeats >= 1, timeout=30, message="a heartbeat")
        assert second.counters.handshakes >= 1
        assert second.stamp == last  # told what was stored: nothing to send again
    finally:
        await second.stop()
    assert second.counters.lines_uploaded == 0


@pytest.mark.parametrize(
    ("method", "path", "params", "status"),
    [
        ("POST", "/iclock/registry", {"SN": SN}, 404),
        ("POST", "/iclock/push", {"SN": SN}, 404),
        ("POST", "/iclock/cdata", {"SN": SN, "table": "rtlog"}, 400),
        ("POST", "/iclock/cdata", {"SN": SN, "table": "tabledata", "tablename": "user", "count": "1"}, 400),
    ],
)
async def test_the_security_protocol_is_refused_and_nothing_stored(
    rig: PushRig, method: str, path: str, params: dict[str, str], status: int
) -> None:
    body = b"time=2026-03-02 08:01:15\tpin=7\tcardno=0\teventaddr=1\tevent=0\tinoutstatus=0\tverifytype=15\tindex=1\n"
    got, text, _ = await rig.request(method, path, params, body)
    assert got == status, text
    assert rig.punches() == []
