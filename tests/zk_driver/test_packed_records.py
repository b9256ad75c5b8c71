"""Packed records: a whole read's parts decoded only where someone reads a record.

`PackedRecords` as a sequence (pure, against a decode that counts its calls), and over real
TCP against the emulator: a whole read of a log whose prefix is already stored decodes only
the records after it, and still hands on exactly what a decoded read would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest

from punchgate.drivers.base import RawPunch, record_chunks
from punchgate.drivers.packed import PackedRecords, concat, last_raw, raw_bytes
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.gateway.worker_known_log import KnownLog, LogIntake, fields_key
from tests.zk_driver.conftest import EmulatorFactory, terminal_config

START = dt.datetime(2026, 11, 2, 7)


class CountingDecode:
    """A record of 4 bytes decoded into a RawPunch whose user is the record's number."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> RawPunch:
        self.calls += 1
        n = int.from_bytes(raw, "little")
        return RawPunch(user_id=str(n), timestamp=START + dt.timedelta(minutes=n), state=0, verify=1, raw=raw)


def packed(first: int, count: int, decode: CountingDecode) -> PackedRecords:
    return PackedRecords(b"".join(n.to_bytes(4, "little") for n in range(first, first + count)), 4, decode)


def users(raws: Sequence[RawPunch]) -> list[str]:
    return [raw.user_id for raw in raws]


def test_records_are_decoded_only_when_read() -> None:
    decode = CountingDecode()
    run = packed(0, 10, decode)
    assert len(run) == 10 and decode.calls == 0
    assert run[3].user_id == "3" and run[-1].user_id == "9" and decode.calls == 2
    with pytest.raises(IndexError):
        run[10]
    with pytest.raises(IndexError):
        run[-11]
    tail = run[7:]
    assert isinstance(tail, PackedRecords) and decode.calls == 2  # a slice stays packed
    assert users(tail) == ["7", "8", "9"] and decode.calls == 5
    assert users(run[::4]) == ["0", "4", "8"]
    assert len(run[8:2]) == 0
    assert list(run) == [decode(n.to_bytes(4, "little")) for n in range(10)]


def test_a_part_of_broken_records_is_refused() -> None:
    with pytest.raises(ValueError, match="not whole records"):
        PackedRecords(b"\x00" * 7, 4, CountingDecode())


def test_bytes_and_joins_need_no_decoding() -> None:
    decode = CountingDecode()
    a, b = packed(0, 3, decode), packed(3, 2, decode)
    assert raw_bytes(a, fields_key) == a.packed and last_raw(b) == (4).to_bytes(4, "little")
    joined = concat([a, b])
    assert isinstance(joined, PackedRecords) and joined.packed == a.packed + b.packed
    assert concat([a]) is a and concat([]) == []
    assert decode.calls == 0
    other = packed(5, 1, CountingDecode())  # another decoder: not the same records
    assert users(concat([a, other])) == ["0", "1", "2", "5"]
    listed = [decode(b"\x09\x00\x00\x00")]
    assert users(concat([a, listed])) == ["0", "1", "2", "9"]
    no_bytes = RawPunch(user_id="1", timestamp=START, state=0, verify=1)
    assert raw_bytes([no_bytes], fields_key) == fields_key(no_bytes) and last_raw([no_bytes]) == b""


def test_a_stored_prefix_is_matched_without_decoding_it() -> None:
    decode = CountingDecode()
    first = LogIntake(None, "seed")
    for part in (packed(0, 60, decode), packed(60, 40, decode)):
        first.committed(first.take(part))
    known = first.known()
    assert known is not None and known.count == 100 and decode.calls == 0
    again = LogIntake(known, "seed")
    handed = [*again.take(packed(0, 70, decode)), *again.take(packed(70, 35, decode)), *again.finish()]
    assert users(handed) == [str(n) for n in range(100, 105)]
    assert decode.calls == 5 and again.skipped == 100
    assert again.newest_skipped() == decode((99).to_bytes(4, "little"))  # asked: decoded then
    assert again.newest_skipped() is None  # once


async def whole_read(driver: ZkDriver, known: KnownLog | None) -> tuple[LogIntake, list[RawPunch]]:
    intake, handed = LogIntake(known, "1\x1fseed"), list[RawPunch]()
    async with contextlib.aclosing(record_chunks(driver)) as chunks:
        async for part in chunks:
            out = intake.take(part)
            intake.committed(out)
            handed += out
    out = intake.finish()
    intake.committed(out)
    return intake, [*handed, *out]


async def test_a_whole_read_over_tcp_decodes_only_what_is_new(
    start_emulator: EmulatorFactory, open_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = await start_emulator(profile="tft", record_capacity=50_000)
    emulator.generate_log(5_000, days=60, users=40, seed=8)
    driver = await open_driver(terminal_config(emulator, "tcp", timeout=5.0))
    first, stored = await whole_read(driver, None)
    assert len(stored) == 5_000
    for user in ("3", "4", "5"):
        emulator.add_punch(user, state=0)
    decoded = 0
    real = zp.decode_attendance

    def counted(*args: Any, **kwargs: Any) -> zp.AttendanceRecord:
        nonlocal decoded
        decoded += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(zp, "decode_attendance", counted)  # a spy: the terminal and socket are real
    second, new = await whole_read(driver, first.known())
    assert second.skipped == 5_000 and users(new) == ["3", "4", "5"]
    assert decoded == 3
    assert new == (await driver.read_records())[5_000:]  # what a decoded read holds there
