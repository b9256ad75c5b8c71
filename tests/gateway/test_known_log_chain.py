"""The known log across tail reads and restarts (pure logic, no terminal): a tail's records are
chained onto the stored digest (`take_tail`), a whole read recognises a chained prefix and
nothing else, and the known log survives the device meta (`to_meta` / `from_meta`)."""

from __future__ import annotations

import dataclasses

from punchgate.drivers.base import RawPunch
from punchgate.gateway.worker_known_log import KnownLog, LogIntake
from punchgate.gateway.worker_tail import take_tail
from tests.gateway.test_log_intake import SEED, core, digest, log, read


def whole(raws: list[RawPunch]) -> KnownLog:
    intake = LogIntake(None, SEED)
    read(intake, raws, 7)
    known = intake.known()
    assert known is not None and known.anchor == raws[-1].raw
    return known


def test_a_chained_prefix_is_recognised_by_a_whole_read() -> None:
    raws = log(30)
    known = whole(raws[:10])
    for lo, hi in ((10, 14), (14, 20)):
        tail = take_tail(raws[lo - 1 : hi], known)  # from the anchor, the last stored record, on
        assert tail is not None and list(tail.new) == raws[lo:hi]
        known = tail.known
    assert (known.count, known.marks, known.anchor) == (20, (10, 14, 20), raws[19].raw)
    assert known.mark_count == 3 and len(known.packed_marks) == 12  # 4 bytes a mark
    intake = LogIntake(known, SEED)
    handed = read(intake, raws, 8)
    assert handed == raws[20:] and intake.skipped == 20
    # After the whole read the digest is the plain one again, with no marks.
    after = intake.known()
    assert after is not None and core(after) == (30, digest(raws)) and after.marks == ()


def test_a_changed_record_inside_a_chained_part_makes_every_record_checked() -> None:
    raws = log(20)
    tail = take_tail(raws[9:20], whole(raws[:10]))
    assert tail is not None
    changed = list(raws)
    changed[15] = dataclasses.replace(raws[15], raw=b"\xff" * 40)
    intake = LogIntake(tail.known, SEED)
    assert read(intake, changed, 6) == changed and intake.skipped == 0


def test_a_tail_that_does_not_start_at_the_anchor_is_refused() -> None:
    raws = log(20)
    known = whole(raws[:10])
    assert take_tail(raws[10:20], known) is None  # one record off
    assert take_tail([], known) is None
    assert take_tail(raws[9:10], known) is None  # nothing new


def test_the_known_log_survives_the_device_meta() -> None:
    raws = log(20)
    tail = take_tail(raws[9:20], whole(raws[:10]))
    assert tail is not None
    meta = tail.known.to_meta(1234.5)
    assert KnownLog.from_meta(meta) == (tail.known, 1234.5)
    assert KnownLog.from_meta({**meta, "marks": [10, 25]}) is None  # does not end at the count
    assert KnownLog.from_meta({**meta, "marks": [20, 10]}) is None
    assert KnownLog.from_meta({**meta, "count": 2**32, "marks": [10, 2**32]}) is None  # past 4 bytes
    assert KnownLog.from_meta({**meta, "anchor": "not hex"}) is None
    assert KnownLog.from_meta({**meta, "digest": "00"}) is None
    assert KnownLog.from_meta("junk") is None
    plain = {k: v for k, v in meta.items() if k not in ("marks", "anchor")}  # as first kept
    restored = KnownLog.from_meta(plain)
    assert restored is not None and restored[0] == KnownLog(20, tail.known.digest)
