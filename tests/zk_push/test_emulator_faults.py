"""Each fault of the push-terminal emulator, seen where a receiver sees it: on the wire."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.drivers.zk_push.emulator.uploads import GARBAGE_LINES
from tests.support.waiting import wait_until_async
from tests.zk_push.test_emulator import SN, FakeReceiver, Maker, make, receiver, valid_attlog

__all__ = ["make", "receiver"]  # the fixtures, shared with test_emulator.py


async def test_garbage_lines_are_mixed_into_an_upload(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make(records=5)
    emulator.set_fault("garbage_lines", count=4, times=1)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 5, timeout=5)

    (post,) = receiver.posts("ATTLOG")
    raw_lines = post.body.rstrip(b"\n").split(b"\n")
    real = [r.line().encode() for r in emulator.records]
    junk = [line for line in raw_lines if line not in real]
    assert sorted(junk) == sorted(GARBAGE_LINES[:4])
    assert [line for line in raw_lines if line in real] == real
    assert not any(valid_attlog(line.decode("gb18030", "replace")) for line in junk)
    assert emulator.last_ok_count == 5, "the fake counted only the good lines"
    assert emulator.faults == {}, "times=1: off after one upload"


async def test_duplicate_uploads_post_a_chunk_again_after_its_OK(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make(records=3)
    emulator.set_fault("duplicate_uploads", times=1)
    await emulator.start()
    await wait_until_async(lambda: emulator.counters.duplicates == 1, timeout=5)

    first, again = receiver.posts("ATTLOG")
    assert first.body == again.body and first.query == again.query == {
        "SN": SN,
        "table": "ATTLOG",
        "Stamp": "3",
    }
    assert emulator.stamp == 3 and emulator.counters.lines_uploaded == 3 + 5  # records + roster


async def test_a_factory_reset_rewinds_the_stamps_and_logs_oplog_22(
    receiver: FakeReceiver, make: Maker
) -> None:
    emulator = make(records=5)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 5 and emulator.op_stamp == 5, timeout=5)

    emulator.set_fault("factory_reset")
    assert emulator.records == [] and emulator.stamp == 0 and emulator.op_stamp == 0
    await wait_until_async(lambda: len(receiver.posts("OPERLOG")) == 2, timeout=5, message="OPLOG 22 posted")
    oplog = receiver.posts("OPERLOG")[1]
    assert oplog.query["Stamp"] == "1"
    (line,) = oplog.lines()
    assert line.startswith("OPLOG 22\t0\t") and len(line.split("\t")) == 7
    assert emulator.counters.reboots == 1 and len(receiver.handshakes()) == 2
    assert "ATTLOGStamp=5" in receiver.option_block(SN), "the server still remembers 5"

    record = emulator.punch("2")
    await wait_until_async(lambda: emulator.stamp == 1, timeout=5, message="the new punch uploaded")
    assert record.seq == 1
    assert [p.query["Stamp"] for p in receiver.posts("ATTLOG")] == ["5", "1"], "the stamp went backwards"
    assert receiver.posts("ATTLOG")[-1].lines() == [record.line()]


async def test_a_dead_battery_puts_new_punches_in_2000(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make()
    await emulator.start()
    emulator.set_fault("dead_battery")
    record = emulator.punch("3")
    await wait_until_async(lambda: emulator.stamp == record.seq, timeout=5)
    (line,) = receiver.lines("ATTLOG")
    assert line.startswith("3\t2000-01-01 00:0")

    emulator.clear_fault("dead_battery")
    assert abs(emulator.now() - datetime.now(emulator.zone).replace(tzinfo=None)) < timedelta(seconds=5)
    emulator.set_fault("dead_battery")
    emulator.set_fault("dead_battery")  # again while on: the clock does not restart again
    assert emulator.now().year == 2000


async def test_a_post_dropped_mid_body_is_sent_again_whole(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make(records=4, users=0)
    emulator.set_fault("drop_mid_post", after_bytes=30, times=1)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 4, timeout=5)

    cut, whole = receiver.posts("ATTLOG", answered_ok=False)
    assert not cut.complete and cut.status == 0 and len(cut.body) == 30
    assert whole.complete and whole.body.startswith(cut.body) and whole.query == cut.query
    assert emulator.counters.failures == 1 and emulator.counters.retries == 1


async def test_slow_posts_trickle_in_small_pieces(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make(records=3, users=0)
    emulator.set_fault("slow_posts", chunk_bytes=10, interval=0.03, times=1)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 3, timeout=5)

    (post,) = receiver.posts("ATTLOG")
    assert post.complete and len(post.body) > 60
    pieces = -(-len(post.body) // 10)
    assert post.pieces >= pieces // 2, "the body came in many small reads"
    assert post.seconds >= (pieces - 1) * 0.03 * 0.8


async def test_wrong_sn_changes_the_serial_on_the_wire(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make()
    await emulator.start()
    await wait_until_async(lambda: receiver.of("/iclock/getrequest"), timeout=5)

    emulator.set_fault("wrong_sn", sn="NOTME")
    record = emulator.punch("4")
    await wait_until_async(lambda: receiver.posts("ATTLOG", sn="NOTME"), timeout=5)
    assert receiver.posts("ATTLOG", sn="NOTME")[0].lines() == [record.line()]
    await wait_until_async(
        lambda: any(r.query.get("SN") == "NOTME" for r in receiver.of("/iclock/getrequest")), timeout=5
    )
    emulator.clear_fault("wrong_sn")
    seen = len(receiver.requests)
    await wait_until_async(lambda: any(r.query.get("SN") == SN for r in receiver.requests[seen:]), timeout=5)


async def test_a_heartbeat_flood(receiver: FakeReceiver, make: Maker) -> None:
    receiver.options["Delay"] = "30"
    emulator = make()
    await emulator.start()
    await wait_until_async(lambda: emulator.counters.heartbeats == 1, timeout=5)

    emulator.set_fault("heartbeat_flood", interval=0.005)
    await wait_until_async(
        lambda: len(receiver.of("/iclock/getrequest")) >= 40, timeout=5, message="40 polls"
    )
    emulator.clear_fault("heartbeat_flood")


async def test_faults_are_checked_and_applied_as_a_set(make: Maker) -> None:
    emulator: ZkPushEmulator = make()
    with pytest.raises(ValueError, match="unknown fault"):
        emulator.set_fault("melted")
    with pytest.raises(ValueError, match="takes no parameter speed"):
        emulator.set_fault("slow_posts", speed=3)
    with pytest.raises(ValueError, match="times must be"):
        emulator.set_fault("drop_mid_post", times=0)
    with pytest.raises(ValueError, match="unknown fault"):
        emulator.clear_fault("melted")

    emulator.apply_faults([("dead_battery", {}), ("wrong_sn", {"sn": "X1"})])
    assert emulator.faults == {"dead_battery": {}, "wrong_sn": {"sn": "X1"}}
    assert emulator.now().year == 2000
    emulator.apply_faults([("wrong_sn", {"sn": "X2"})])
    assert emulator.faults == {"wrong_sn": {"sn": "X2"}}
    assert emulator.now().year > 2000
    emulator.apply_faults([])
    assert emulator.faults == {}
