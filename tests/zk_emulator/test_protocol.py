"""The pure codec against the captured vectors and the documented known answers."""

from __future__ import annotations

import datetime as dt
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from punchgate.drivers.zk import protocol as p
from tests.zk_emulator.conftest import VECTORS, vector_bytes, vector_packet

FRAMED = [vid for vid, v in VECTORS.items() if v["framing"] in ("tcp-envelope", "bare-packet")]


@pytest.mark.parametrize("vector_id", FRAMED)
def test_every_captured_packet_parses_with_its_header_and_checksum(vector_id: str) -> None:
    header = VECTORS[vector_id]["header"]
    packet = p.parse_packet(vector_packet(vector_id))
    assert packet.command == header["cmd"]
    assert packet.checksum == int(header["checksum"], 16)
    assert packet.session == int(header["session"], 16)
    assert packet.reply == header["reply"]
    # Rebuilding from the decoded fields gives the same bytes.
    assert p.build_packet(packet.command, packet.session, packet.reply, packet.data) == vector_packet(
        vector_id
    )


def test_documented_checksum_vectors() -> None:
    assert p.checksum(vector_bytes("adro-chk-vector-1")) == 0x175A
    assert p.checksum(vector_bytes("adro-chk-vector-2")) == 0x6A29  # odd length


def _checksum_by_words(packet: bytes) -> int:
    """The checksum as zk.md defines it, word by word (the reference for the fast one)."""
    body = packet[:2] + b"\x00\x00" + packet[4:]
    if len(body) % 2:
        body += b"\x00"
    total: int = sum(struct.unpack(f"<{len(body) // 2}H", body))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@given(st.binary(min_size=8, max_size=3000))
def test_checksum_is_the_folded_sum_of_the_words(packet: bytes) -> None:
    assert p.checksum(packet) == _checksum_by_words(packet)


@pytest.mark.parametrize(
    "packet",
    [
        bytes(8),  # a sum of 0 stays 0 (checksum 0xFFFF)
        b"\xff\xff\x00\x00" + bytes(4),  # exactly 0xFFFF, no fold
        b"\xff\xff\x00\x00\xff\xff\x00\x00",  # 0x1FFFE folds to 0xFFFF, never to 0
        b"\xff" * 2 + b"\x12\x34" + b"\xff" * 4001,  # many folds, odd length
        b"\x01\x00\x00\x00\xfe\xff\x00\x00",  # 0xFFFF from two words
    ],
)
def test_checksum_edge_sums(packet: bytes) -> None:
    assert p.checksum(packet) == _checksum_by_words(packet)


def test_bad_checksum_is_a_frame_error_with_the_bytes() -> None:
    raw = bytearray(vector_packet("pyzk-connect-ack"))
    raw[2] ^= 0xFF
    with pytest.raises(p.ZkChecksumError) as info:
        p.parse_packet(bytes(raw))
    assert info.value.raw == bytes(raw)
    assert bytes(raw).hex() in str(info.value)
    with pytest.raises(p.ZkFrameError):
        p.parse_packet(b"\xd0\x07")


@pytest.mark.parametrize(
    ("key", "expected"),
    [(12, "614d323c"), (45, "61c9323c"), (0, "617d323c")],
)
def test_comm_key_hash_vectors(key: int, expected: str) -> None:
    assert p.comm_key_hash(key, 0x45CF, 50).hex() == expected
    assert p.comm_key_matches(bytes.fromhex(expected), key, 0x45CF)
    assert not p.comm_key_matches(bytes.fromhex(expected), key + 1, 0x45CF)


def test_comm_key_reads_ticks_from_the_packet() -> None:
    data = p.comm_key_hash(1234, 0x1111, ticks=7)
    assert data[2] == 7
    assert p.comm_key_matches(data, 1234, 0x1111)


def test_auth_request_vector_carries_the_hash() -> None:
    packet = p.parse_packet(vector_packet("pyzk-auth-key45-req"))
    assert p.comm_key_matches(packet.data, 45, packet.session)


@pytest.mark.parametrize(
    ("value", "when"),
    [
        (587468120, dt.datetime(2018, 4, 11, 9, 35, 20)),
        (0x2368B36B, dt.datetime(2018, 6, 25, 17, 50, 35)),
        (0x23689BC2, dt.datetime(2018, 6, 25, 16, 9, 38)),
        (0x234F15EC, dt.datetime(2018, 6, 6, 7, 31, 56)),
        (0x1EA7EBA8, dt.datetime(2016, 1, 1, 19, 2, 0)),
    ],
)
def test_packed_time_known_answers(value: int, when: dt.datetime) -> None:
    assert p.decode_time(value) == when
    assert p.encode_time(when) == value


def test_packed_time_rejects_impossible_dates() -> None:
    feb31 = p.encode_time(dt.datetime(2020, 1, 31)) + 31 * 86400  # month 2, day 31
    with pytest.raises(p.ZkFrameError):
        p.decode_time(feb31)
    with pytest.raises(ValueError):
        p.encode_time(dt.datetime(1999, 12, 31))


def test_six_byte_time() -> None:
    when = dt.datetime(2018, 12, 7, 19, 9, 6)
    assert p.encode_time6(when) == bytes.fromhex("120c07130906")
    assert p.decode_time6(bytes.fromhex("120c07130906")) == when
    with pytest.raises(p.ZkFrameError):
        p.decode_time6(bytes.fromhex("120d07130906"))  # month 13


def test_tcp_reassembler_handles_splits_garbage_and_resync() -> None:
    frames = [
        vector_bytes("pyzk-connect-ack"),
        vector_bytes("pyzk-70u-data-0"),
        vector_bytes("pyzk-exit-req"),
    ]
    stream = b"".join(frames)
    junk: list[bytes] = []
    reassembler = p.TcpReassembler(on_garbage=junk.append)
    packets: list[bytes] = []
    for i in range(0, len(stream), 7):  # awkward segment boundaries
        packets += reassembler.feed(stream[i : i + 7])
    assert packets == [p.tcp_unwrap(f) for f in frames]
    assert reassembler.pending == 0
    assert not junk
    # Garbage before a frame is reported and skipped; the frame still comes out.
    packets = reassembler.feed(b"\x01\x02garbage\x50" + frames[0])
    assert packets == [p.tcp_unwrap(frames[0])]
    assert junk == [b"\x01\x02garbage\x50"]


def test_tcp_unwrap_checks_the_length() -> None:
    with pytest.raises(p.ZkFrameError):
        p.tcp_unwrap(bytes.fromhex(VECTORS["pyzk-live-attlog-12"]["hex"]))  # edited length field


def test_att40_captured_record() -> None:
    raw = vector_bytes("adro-att40-record")
    record = p.decode_attendance(raw, 40)
    assert (record.uid, record.user_id, record.verify, record.state) == (13, "999111333", 1, 0)
    assert record.timestamp == dt.datetime(2018, 6, 25, 17, 50, 35)
    assert record.extra == bytes.fromhex("00000000ff000000")
    assert p.encode_attendance(record, 40) == raw


@pytest.mark.parametrize(
    ("vector_id", "uid", "when"),
    [
        ("pyzk99-att8-0", 7, dt.datetime(2016, 1, 1, 19, 2, 0)),
        ("pyzk99-att8-1", 123, dt.datetime(2016, 1, 1, 19, 4, 43)),
        ("pyzk99-att8-2", 123, dt.datetime(2016, 1, 1, 19, 4, 46)),
    ],
)
def test_att8_zem500_captured_records(vector_id: str, uid: int, when: dt.datetime) -> None:
    raw = vector_bytes(vector_id)
    record = p.decode_attendance(raw, 8, eight_byte_variant="zem500")
    assert (record.uid, record.timestamp, record.verify, record.state) == (uid, when, 8, 2)
    assert p.encode_attendance(record, 8, eight_byte_variant="zem500") == raw
    # The pyzk byte order mis-decodes these records: the time is garbage, not an exception.
    assert p.decode_attendance(raw, 8).timestamp != when


@pytest.mark.parametrize("size", [8, 16, 40, 49])
def test_attendance_round_trip_every_layout(size: int) -> None:
    when = dt.datetime(2024, 3, 5, 8, 1, 2)
    record = p.AttendanceRecord(
        uid=3, user_id="3", time_raw=p.encode_time(when), timestamp=when, verify=1, state=2, work_code=0
    )
    raw = p.encode_attendance(record, size)
    assert len(raw) == size
    again = p.decode_attendance(raw, size)
    assert (again.user_id, again.timestamp, again.verify, again.state) == ("3", when, 1, 2)


def test_attendance_set_uses_the_record_count() -> None:
    when = dt.datetime(2024, 3, 5, 8, 1, 2)
    rec = p.AttendanceRecord(
        uid=1, user_id="42", time_raw=p.encode_time(when), timestamp=when, verify=1, state=0
    )
    data_set = p.encode_data_set([p.encode_attendance(rec, 16)] * 3)
    assert [r.user_id for r in p.decode_attendance_set(data_set, 3)] == ["42"] * 3
    with pytest.raises(p.ZkFrameError):
        p.decode_attendance_set(data_set, 2)  # 48 bytes / 2 = 24: no such layout
    with pytest.raises(p.ZkFrameError):
        p.decode_attendance_set(data_set[:-1], 3)  # byte count disagrees


def test_invalid_record_time_keeps_the_raw_value() -> None:
    feb31 = p.encode_time(dt.datetime(2020, 1, 31)) + 31 * 86400
    raw = struct.pack("<HBIB", 1, 1, feb31, 0)
    record = p.decode_attendance(raw, 8)
    assert record.timestamp is None
    assert record.time_raw == feb31


def test_users_from_captured_direct_reply() -> None:
    data = p.parse_packet(vector_packet("pyzk-users-direct-7")).data
    users = p.decode_user_set(data, 7)
    assert [u.user_id for u in users] == ["808", "821", "835", "831", "832", "86", "842"]
    assert users[0].uid == 1 and users[0].privilege == 14
    assert p.encode_data_set(p.encode_user(u, 72) for u in users) == data


def test_users_k20_alphanumeric_ids() -> None:
    data = p.parse_packet(vector_packet("pyzk-K20-users-data")).data
    users = p.decode_user_set(data, 2)
    assert [(u.name, u.user_id) for u in users] == [("cfulano", "100001lp"), ("rmengano", "222222cb")]


def test_user_write_capture_decodes() -> None:
    user = p.decode_user(p.parse_packet(vector_packet("adro-user-wrq")).data, 72)
    assert (user.uid, user.privilege, user.password, user.name) == (14, 6, "123456", "Nuevo")
    assert (user.card, user.group, user.user_id) == (6543, 1, "11224488")


def test_user28_round_trip() -> None:
    user = p.UserRecord(uid=5, user_id="1234", name="Ana", privilege=0, password="12", card=77, group=1)
    raw = p.encode_user(user, 28)
    assert len(raw) == 28
    assert p.decode_user(raw, 28) == user
    with pytest.raises(ValueError):
        p.encode_user(p.UserRecord(uid=1, user_id="A1"), 28)  # BW holds numeric ids only


def test_live_events_from_captures() -> None:
    event = p.decode_live_attendance(p.parse_packet(vector_packet("pyzk-live-attlog-12")).data)
    assert (event.user_id, event.verify, event.state) == ("4822257", 0, 0)
    assert event.timestamp == dt.datetime(2018, 12, 7, 19, 9, 6)
    event = p.decode_live_attendance(vector_bytes("pyzk8-live-attlog-32-payload"))
    assert (event.user_id, event.verify, event.state) == ("1140064", 15, 0)
    assert event.timestamp == dt.datetime(2018, 11, 29, 12, 55, 3)
    adro = p.parse_packet(vector_packet("adro-live-attlog-32"))
    event = p.decode_live_attendance(adro.data)
    assert (event.user_id, event.verify, event.state) == ("999111333", 1, 0)
    assert p.encode_live_attendance(event, 32) == adro.data


@pytest.mark.parametrize("size", [10, 12, 14, 32, 36, 37, 52])
def test_live_event_every_size_round_trips(size: int) -> None:
    event = p.LiveAttendance(user_id="77", verify=15, state=1, timestamp=dt.datetime(2025, 1, 2, 3, 4, 5))
    raw = p.encode_live_attendance(event, size)
    assert len(raw) == size
    again = p.decode_live_attendance(raw)
    assert (again.user_id, again.verify, again.state, again.timestamp) == ("77", 15, 1, event.timestamp)


def test_live_event_unknown_size_is_an_error() -> None:
    with pytest.raises(p.ZkFrameError):
        p.decode_live_attendance(b"\x00" * 20)


@pytest.mark.parametrize(
    ("vector_id", "expected"),
    [
        ("pyzk-freesizes-reply-K20", (2, 0, 0, 7, 500, 500, 50000, 500, 498, 50000)),
        ("pyzk-freesizes-reply-70users", (70, 70, 3225, 282, 500, 500, 50000, 430, 430, 46775)),
        ("pyzk-freesizes-reply-7users", (7, 6, 605, 3087, 3000, 10000, 100000, 2994, 9993, 99395)),
    ],
)
def test_free_sizes_from_captures(vector_id: str, expected: tuple[int, ...]) -> None:
    data = p.parse_packet(vector_packet(vector_id)).data
    s = p.decode_free_sizes(data)
    got = (s.users, s.fingers, s.records, s.oplog, s.finger_capacity, s.user_capacity, s.record_capacity)
    assert (*got, s.fingers_free, s.users_free, s.records_free) == expected
    assert p.encode_free_sizes(s, len(data)) == data


def test_free_sizes_face_section() -> None:
    sizes = p.FreeSizes(users=3, records=9, record_capacity=100, faces=2, face_capacity=400)
    raw = p.encode_free_sizes(sizes, 92)
    assert len(raw) == 92
    assert p.decode_free_sizes(raw) == sizes
    with pytest.raises(p.ZkFrameError):
        p.decode_free_sizes(raw[:60])


def test_buffer_arguments_from_captures() -> None:
    request = p.decode_buffer_request(p.parse_packet(vector_packet("pyzk-getusers-req")).data)
    assert request == p.BufferRequest(p.CMD_USERTEMP_RRQ, p.FCT_USER, 0)
    assert p.decode_buffer_ready(p.parse_packet(vector_packet("pyzk-70u-prepbuf-ack")).data) == 5044
    assert p.decode_prepare_data(p.parse_packet(vector_packet("pyzk-70u-prepare-data")).data) == (5044, 1008)


def test_option_codecs_from_captures() -> None:
    assert p.decode_option_request(p.parse_packet(vector_packet("adro-options-os-req")).data) == "~OS"
    reply = p.parse_packet(vector_packet("adro-options-platform-reply")).data
    assert p.decode_option_reply(reply) == ("~Platform", "ZEM760_TFT")
    assert p.encode_option_reply("~Platform", "ZEM760_TFT") == reply
