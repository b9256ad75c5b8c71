"""The Anviz codec against the frames in docs/protocols/anviz.md (captured and computed)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from punchgate.drivers.anviz import codec, frame_decoder
from punchgate.drivers.anviz.codec import FrameDecoder, Garbage, Record, Request, Response
from punchgate.drivers.anviz.frame_decoder import MAX_HELD_NOISE
from punchgate.drivers.anviz.frames import LOG_PREVIEW_BYTES, hex_preview
from punchgate.drivers.anviz.link import GARBAGE_KEPT_PER_ATTEMPT, GarbageTally, LogBudget

# (hex frame, what it is) — anviz.md §3.1: captured CrossChex frames, then computed ones.
VECTORS = [
    ("a500000001ff00000078c1", "host pong to device 1"),
    ("A5000000013C000049A9", "get record info"),
    ("A50000000140000202193EC0", "download new records, first packet of 25"),
    ("A50000000140000200198EF3", "download continue, 25"),
    ("A5000000014E000402000033944D", "clear new flag on 51 records"),
    ("A500000001BC0000120000BD00013800000C00000700C35000003324EC", "record info reply"),
    ("A500000001B000001230332E32362E3933401A810A050020000002DF36", "config 1 reply"),
    ("A500000001C000000F010000000001322AA3D00100000000F4C6", "download reply, 1 record"),
    ("a5000000017f00005b40", "heartbeat from device 1"),
    ("a5000000012400001eea", "get serial number"),
    ("a50000000138000028ca", "get time"),
    ("a5000000003c0000f2b5", "broadcast get record info"),
    ("a500000001400002011956ea", "download all, first packet of 25"),
    ("a5000000014e000401000000416b", "clear all new flags"),
    ("a5000000015e0000bc19", "unlock"),
    ("a50000000132000052b9", "get config 2"),
    ("a5000000015d0000d8f6", "capacity"),
]


def test_crc_is_mcrf4xx() -> None:
    assert codec.crc16(b"123456789") == 0x6F91
    assert codec.crc16(bytes.fromhex("A5000000013000 00".replace(" ", ""))) == 0x0CEA


@pytest.mark.parametrize(("frame_hex", "what"), VECTORS, ids=[v[1] for v in VECTORS])
def test_vectors_decode_and_reencode_byte_for_byte(frame_hex: str, what: str) -> None:
    raw = bytes.fromhex(frame_hex)
    frame = codec.decode_frame(raw)
    assert frame.device_id in (0, 1)
    assert frame.encode() == raw


def test_captured_replies_decode_to_the_documented_values() -> None:
    info = codec.decode_frame(bytes.fromhex(VECTORS[5][0]))
    assert isinstance(info, Response) and info.ack == 0xBC and info.ret == 0
    assert codec.RecordInfo.decode(info.data) == codec.RecordInfo(189, 312, 12, 7, 50_000, 51)

    config1 = codec.decode_frame(bytes.fromhex(VECTORS[6][0]))
    assert isinstance(config1, Response)
    assert codec.Config1.decode(config1.data) == codec.Config1(firmware="03.26.93", command_version=2)

    batch = codec.decode_frame(bytes.fromhex(VECTORS[7][0]))
    assert isinstance(batch, Response)
    (record,) = codec.decode_records(batch.data)
    assert record == Record(user_code=1, seconds=0x322AA3D0, backup_code=1, record_type=0, work_code=0)

    clear = codec.decode_frame(bytes.fromhex(VECTORS[4][0]))
    assert clear == codec.clear_request(1, codec.CLEAR_NEW_FLAG_COUNT, 51)
    assert codec.decode_frame(bytes.fromhex(VECTORS[2][0])) == codec.download_request(1, 2, 25)


def test_record_epoch_matches_crosschex_captures() -> None:
    # anviz.md §5.3: CrossChex showed these raw values as these device-local times
    assert Record(1, 0x322989D0, 1, 0).local_time() == dt.datetime(2026, 9, 2, 13, 4, 16)
    assert Record(430, 0x32315785, 1, 0).local_time() == dt.datetime(2026, 9, 8, 11, 7, 49)
    assert codec.seconds_since_epoch(dt.datetime(2026, 9, 2, 13, 4, 16)) == 0x322989D0


def test_captured_push_record_layout() -> None:
    body = bytes.fromhex("A500000014DF00000E00000001AE323157850100000000")  # anviz.md §5.7, CRC computed
    push = codec.decode_frame(body + codec.crc16(body).to_bytes(2, "little"))
    assert isinstance(push, Response)
    record = Record.decode(push.data)
    assert (push.device_id, push.ack, record.user_code, record.backup_code, record.state) == (
        20,
        0xDF,
        430,
        1,
        0,
    )
    assert record.local_time() == dt.datetime(2026, 9, 8, 11, 7, 49)
    assert Record.decode(bytes.fromhex("000297BCE7322989D00187000102")).user_code == 43498727


def test_record_fields_round_trip_and_state_bits() -> None:
    record = Record(
        user_code=0xFF_FFFF_FFFF, seconds=0xFFFF_FFFF, backup_code=0x18, record_type=0x87, work_code=0xABCDEF
    )
    assert Record.decode(record.encode()) == record
    assert record.state == 7 and record.door_opened


def test_clock_round_trip_and_bad_bytes() -> None:
    when = dt.datetime(2031, 12, 31, 23, 59, 58)
    assert codec.decode_clock(codec.encode_clock(when)) == when
    with pytest.raises(codec.CodecError, match="not a date"):
        codec.decode_clock(bytes([26, 13, 1, 0, 0, 0]))
    with pytest.raises(codec.CodecError, match="6 data bytes"):
        codec.decode_clock(b"\x01")


def test_payload_length_errors_are_clear() -> None:
    with pytest.raises(codec.CodecError, match="record batch of 2"):
        codec.decode_records(bytes([2]) + bytes(14))
    with pytest.raises(codec.CodecError, match="record information"):
        codec.RecordInfo.decode(bytes(17))
    with pytest.raises(codec.CodecError, match=r"1\.\.25"):
        codec.download_request(1, 0, 26)


def test_text_fields_strip_padding_and_garbage() -> None:
    assert codec.decode_text(b"TC400\0\0\0") == "TC400"
    assert codec.decode_text(b"AB12\x01\xff") == "AB12"


# ---- stream decoding -----------------------------------------------------------------------

REPLY = Response(7, 0xBC, 0, codec.RecordInfo(1, 2, 3, 4, 5, 6).encode()).encode()


def _frames(items: Sequence[object]) -> list[object]:
    return [i for i in items if not isinstance(i, Garbage)]


def test_decoder_handles_a_frame_split_byte_by_byte() -> None:
    decoder = FrameDecoder()
    out: list[object] = []
    for byte in REPLY + REPLY:
        out += decoder.feed(bytes([byte]))
    assert len(out) == 2 and all(isinstance(f, Response) and f.raw == REPLY for f in out)
    assert decoder.pending == b""


def test_noise_before_start_byte_is_reported_with_its_bytes() -> None:
    out = FrameDecoder().feed(b"\x00\x13\x37" + REPLY)
    assert isinstance(out[0], Garbage) and out[0].raw == b"\x00\x13\x37"
    assert out[0].reason == "noise before start byte"
    assert _frames(out) == [codec.decode_frame(REPLY)]


def test_noise_holding_a_start_byte_does_not_swallow_the_next_frame() -> None:
    # A5 00 A5 00 00 ... reads as a header announcing hundreds of bytes that never come
    out = FrameDecoder().feed(bytes.fromhex("00ffa500") + REPLY)
    assert _frames(out) == [codec.decode_frame(REPLY)]
    garbage = [g for g in out if isinstance(g, Garbage)]
    assert b"".join(g.raw for g in garbage) == bytes.fromhex("00ffa500")


def test_bad_crc_is_discarded_and_the_next_good_frame_still_decodes() -> None:
    broken = REPLY[:-1] + bytes([REPLY[-1] ^ 0xFF])
    decoder = FrameDecoder()
    out = decoder.feed(broken + REPLY)
    assert _frames(out) == [codec.decode_frame(REPLY)]
    assert [g.raw for g in out if isinstance(g, Garbage)] == [broken]
    assert [g.reason for g in out if isinstance(g, Garbage)] == ["bad CRC"]


def test_wrong_length_field_is_discarded_at_flush() -> None:
    wrong = REPLY[:8] + bytes([REPLY[8] + 3]) + REPLY[9:]
    decoder = FrameDecoder()
    assert decoder.feed(wrong) == []  # waits for three bytes that never come
    flushed = decoder.flush()
    assert flushed is not None and flushed.raw == wrong
    assert decoder.flush() is None


def test_request_and_reply_forms_are_told_apart() -> None:
    out = FrameDecoder().feed(Request(3, 0x7F).encode() + REPLY)
    assert isinstance(out[0], Request) and out[0].command == codec.CMD_HEARTBEAT
    assert isinstance(out[1], Response)


def test_decode_frame_rejects_leftovers() -> None:
    with pytest.raises(codec.CodecError):
        codec.decode_frame(REPLY + b"\x00")
    with pytest.raises(codec.CodecError, match="bad CRC"):
        codec.decode_frame(REPLY[:-1] + b"\x00")


# ---- hardening: what a hostile peer can make the decoder do ----------------------------------


def _crc_by_definition(data: bytes) -> int:
    """CRC-16/MCRF4XX bit by bit, as anviz.md §3 defines it."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=700))
def test_crc_matches_the_bitwise_definition(data: bytes) -> None:
    assert codec.crc16(data) == _crc_by_definition(data)
    assert codec.crc16(bytearray(data)) == _crc_by_definition(data)


def test_a_flood_of_start_bytes_is_noise_judged_by_the_header_alone() -> None:
    decoder = FrameDecoder()
    started = time.perf_counter()
    out = decoder.feed(b"\xa5" * 65536)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # ~10 ms here; the old decoder needed minutes for this
    garbage = [g for g in out if isinstance(g, Garbage)]
    assert garbage == out
    assert garbage[0].reason == "LEN 42405 over the maximum 600 for 0xA5"
    assert len(decoder.pending) <= 9  # the last start bytes, whose header is not complete yet
    assert sum(len(g.raw) for g in garbage) + len(decoder.pending) == 65536


def test_a_flood_fed_a_byte_at_a_time_holds_little_and_reports_in_pieces() -> None:
    decoder = FrameDecoder()
    out: list[object] = []
    for _ in range(5000):
        out += decoder.feed(b"\xa5")
        assert len(decoder.pending) < MAX_HELD_NOISE + 9
    assert len(out) >= 4 and all(isinstance(g, Garbage) for g in out)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("a500000001400258", "LEN 600 over the maximum 2 for 0x40"),  # a download request
        ("a500000001bc000013", "LEN 19 over the maximum 18 for 0xBC"),  # record information
        ("a500000001c0000160", "LEN 352 over the maximum 351 for 0xC0"),  # 25 records and more
        ("a500000001f1000259", "LEN 601 over the maximum 600 for 0xF1"),  # a code punchgate never uses
        ("a500000001bc010001", "refusal 0xBC (RET 0x01) with 1 data bytes"),
    ],
)
def test_a_header_no_frame_can_have_is_refused_at_once(header: str, reason: str) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(bytes.fromhex(header)) == []  # held as noise: nothing waits for its bytes
    assert decoder.held_frame == 0
    flushed = decoder.flush()
    assert flushed is not None and flushed.reason == reason


def test_the_longest_frame_each_code_may_have_still_decodes() -> None:
    batch = codec.encode_records([Record(i, i, 1, 0) for i in range(codec.MAX_RECORDS_PER_PACKET)])
    longest: list[Request | Response] = [
        Response(1, 0xC0, 0, batch),
        Response(1, 0xF1, 0, bytes(600)),
        Request(1, 0x7E, bytes(600)),
        Response(1, 0xBC, 1),
    ]
    stream = b"".join(f.encode() for f in longest)
    out = FrameDecoder().feed(stream)
    assert [f.encode() for f in out if not isinstance(f, Garbage)] == [f.encode() for f in longest]


def test_noise_held_back_is_reported_once_it_passes_the_limit() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00" * (MAX_HELD_NOISE - 1)) == []
    (garbage,) = decoder.feed(b"\x00")
    assert isinstance(garbage, Garbage) and len(garbage.raw) == MAX_HELD_NOISE
    assert decoder.pending == b""


def test_each_start_byte_costs_one_crc_at_most_however_the_bytes_trickle_in() -> None:
    # plausible headers (an unknown code, LEN 0x0200) every 13 bytes, never a valid CRC: the
    # worst a peer can do, and it is fed a byte at a time so every candidate waits for its end
    header = bytes.fromhex("a5000000017e0200")
    stream = (header + bytes(5)) * 300
    calls: list[int] = []

    def counting(data: bytes | bytearray) -> int:
        calls.append(len(data))
        return codec.crc16(data)

    decoder = FrameDecoder()
    with mock.patch.object(frame_decoder, "crc16", counting):
        for byte in stream:
            decoder.feed(bytes([byte]))
    assert 0 < len(calls) <= stream.count(codec.STX)


def test_garbage_is_logged_truncated() -> None:
    assert hex_preview(b"\x00\xff") == "00ff"
    preview = hex_preview(bytes(100))
    assert preview == "00" * LOG_PREVIEW_BYTES + f"...(+{100 - LOG_PREVIEW_BYTES} bytes)"


def test_the_log_budget_counts_what_it_leaves_out() -> None:
    budget = LogBudget(burst=3, window=3600)
    assert [budget.take() for _ in range(5)] == [0, 0, 0, None, None]
    budget._window_start -= 3600  # the next window
    assert budget.take() == 2


def test_an_attempt_keeps_a_bounded_number_of_garbage_pieces() -> None:
    tally = GarbageTally()
    for i in range(GARBAGE_KEPT_PER_ATTEMPT + 10):
        tally.add(Garbage(bytes(100), f"piece {i}"))
    assert len(tally.kept) == GARBAGE_KEPT_PER_ATTEMPT
    assert (tally.extra_items, tally.extra_bytes) == (10, 1000)
    assert tally.last_reason == f"piece {GARBAGE_KEPT_PER_ATTEMPT + 9}"
