"""The ZK standalone protocol as pure functions and values: no sockets, no clocks.

Shared by the emulator (terminal side) and the gateway's ZK driver (client side). Everything
here follows docs/protocols/zk.md; the vectors in tests/data/zk_vectors.json pin it down.

A ZK packet is an 8-byte little-endian header (command, checksum, session, reply number)
followed by data. Over UDP it travels bare; over TCP it is wrapped in an envelope
`50 50 82 7D` + u32 LE length. Malformed input raises `ZkFrameError` (a ValueError) with
the offending bytes in hex, so callers can log it and carry on.

This package re-exports every public name, so `from punchgate.drivers.zk import protocol`
keeps reading as one vocabulary. The parts, one job each:

    errors           ZkFrameError, ZkChecksumError
    codes            command/reply codes, live-event flags, table selectors
    framing          header, checksum, packets, TCP envelope and stream reassembly
    comm_key         the CMD_AUTH comm-key proof
    time_codec       packed 4-byte time and 6-byte live-event time
    fields           NUL-padded text fields and data-set byte counts (shared by the codecs)
    attendance       stored attendance records (8/16/40/49 bytes)
    users            user records (28/72 bytes)
    live_attendance  EF_ATTLOG live-event payloads
    free_sizes       the GET_FREE_SIZES reply
    arguments        small command payloads (buffered reads, bulk transfers, options)
"""

from __future__ import annotations

from punchgate.drivers.zk.protocol.arguments import (
    BufferRequest,
    decode_buffer_ready,
    decode_buffer_request,
    decode_option_reply,
    decode_option_request,
    decode_prepare_data,
    decode_read_buffer,
    encode_buffer_ready,
    encode_buffer_request,
    encode_option_reply,
    encode_option_request,
    encode_prepare_data,
    encode_read_buffer,
)
from punchgate.drivers.zk.protocol.attendance import (
    ATTENDANCE_RECORD_SIZES,
    AttendanceRecord,
    EightByteVariant,
    decode_attendance,
    decode_attendance_set,
    encode_attendance,
)
from punchgate.drivers.zk.protocol.codes import (
    CMD_ACK_DATA,
    CMD_ACK_ERROR,
    CMD_ACK_OK,
    CMD_ACK_UNAUTH,
    CMD_ACK_UNKNOWN,
    CMD_ATTLOG_RRQ,
    CMD_AUTH,
    CMD_CANCELCAPTURE,
    CMD_CLEAR_ATTLOG,
    CMD_CLEAR_DATA,
    CMD_CONNECT,
    CMD_DATA,
    CMD_DB_RRQ,
    CMD_DELETE_USER,
    CMD_DISABLEDEVICE,
    CMD_ENABLEDEVICE,
    CMD_EXIT,
    CMD_FREE_DATA,
    CMD_GET_FREE_SIZES,
    CMD_GET_PINWIDTH,
    CMD_GET_TIME,
    CMD_GET_VERSION,
    CMD_OPTIONS_RRQ,
    CMD_OPTIONS_WRQ,
    CMD_POWEROFF,
    CMD_PREPARE_BUFFER,
    CMD_PREPARE_DATA,
    CMD_READ_BUFFER,
    CMD_REFRESHDATA,
    CMD_REG_EVENT,
    CMD_RESTART,
    CMD_SET_TIME,
    CMD_STARTVERIFY,
    CMD_STATE_RRQ,
    CMD_UNLOCK,
    CMD_USER_WRQ,
    CMD_USERTEMP_RRQ,
    EF_ALARM,
    EF_ATTLOG,
    EF_BUTTON,
    EF_ENROLLFINGER,
    EF_ENROLLUSER,
    EF_FINGER,
    EF_FPFTR,
    EF_UNLOCK,
    EF_VERIFY,
    FCT_ATTLOG,
    FCT_FINGERTMP,
    FCT_OPLOG,
    FCT_USER,
    REPLY_CODES,
)
from punchgate.drivers.zk.protocol.comm_key import (
    comm_key_hash,
    comm_key_matches,
)
from punchgate.drivers.zk.protocol.errors import (
    ZkChecksumError,
    ZkFrameError,
)
from punchgate.drivers.zk.protocol.fields import (
    encode_data_set,
)
from punchgate.drivers.zk.protocol.framing import (
    HEADER_SIZE,
    TCP_DATA_CHUNK,
    TCP_ENVELOPE_SIZE,
    TCP_MAGIC,
    UDP_DATA_CHUNK,
    USHRT_MAX,
    TcpReassembler,
    ZkPacket,
    build_packet,
    checksum,
    parse_packet,
    tcp_unwrap,
    tcp_wrap,
)
from punchgate.drivers.zk.protocol.free_sizes import (
    FREE_SIZES_LENGTHS,
    FreeSizes,
    decode_free_sizes,
    encode_free_sizes,
)
from punchgate.drivers.zk.protocol.live_attendance import (
    LIVE_EVENT_SIZES,
    LiveAttendance,
    decode_live_attendance,
    encode_live_attendance,
)
from punchgate.drivers.zk.protocol.time_codec import (
    decode_time,
    decode_time6,
    encode_time,
    encode_time6,
)
from punchgate.drivers.zk.protocol.users import (
    USER_RECORD_SIZES,
    UserRecord,
    decode_user,
    decode_user_set,
    encode_user,
)

__all__ = [
    "ATTENDANCE_RECORD_SIZES",
    "CMD_ACK_DATA",
    "CMD_ACK_ERROR",
    "CMD_ACK_OK",
    "CMD_ACK_UNAUTH",
    "CMD_ACK_UNKNOWN",
    "CMD_ATTLOG_RRQ",
    "CMD_AUTH",
    "CMD_CANCELCAPTURE",
    "CMD_CLEAR_ATTLOG",
    "CMD_CLEAR_DATA",
    "CMD_CONNECT",
    "CMD_DATA",
    "CMD_DB_RRQ",
    "CMD_DELETE_USER",
    "CMD_DISABLEDEVICE",
    "CMD_ENABLEDEVICE",
    "CMD_EXIT",
    "CMD_FREE_DATA",
    "CMD_GET_FREE_SIZES",
    "CMD_GET_PINWIDTH",
    "CMD_GET_TIME",
    "CMD_GET_VERSION",
    "CMD_OPTIONS_RRQ",
    "CMD_OPTIONS_WRQ",
    "CMD_POWEROFF",
    "CMD_PREPARE_BUFFER",
    "CMD_PREPARE_DATA",
    "CMD_READ_BUFFER",
    "CMD_REFRESHDATA",
    "CMD_REG_EVENT",
    "CMD_RESTART",
    "CMD_SET_TIME",
    "CMD_STARTVERIFY",
    "CMD_STATE_RRQ",
    "CMD_UNLOCK",
    "CMD_USERTEMP_RRQ",
    "CMD_USER_WRQ",
    "EF_ALARM",
    "EF_ATTLOG",
    "EF_BUTTON",
    "EF_ENROLLFINGER",
    "EF_ENROLLUSER",
    "EF_FINGER",
    "EF_FPFTR",
    "EF_UNLOCK",
    "EF_VERIFY",
    "FCT_ATTLOG",
    "FCT_FINGERTMP",
    "FCT_OPLOG",
    "FCT_USER",
    "FREE_SIZES_LENGTHS",
    "HEADER_SIZE",
    "LIVE_EVENT_SIZES",
    "REPLY_CODES",
    "TCP_DATA_CHUNK",
    "TCP_ENVELOPE_SIZE",
    "TCP_MAGIC",
    "UDP_DATA_CHUNK",
    "USER_RECORD_SIZES",
    "USHRT_MAX",
    "AttendanceRecord",
    "BufferRequest",
    "EightByteVariant",
    "FreeSizes",
    "LiveAttendance",
    "TcpReassembler",
    "UserRecord",
    "ZkChecksumError",
    "ZkFrameError",
    "ZkPacket",
    "build_packet",
    "checksum",
    "comm_key_hash",
    "comm_key_matches",
    "decode_attendance",
    "decode_attendance_set",
    "decode_buffer_ready",
    "decode_buffer_request",
    "decode_free_sizes",
    "decode_live_attendance",
    "decode_option_reply",
    "decode_option_request",
    "decode_prepare_data",
    "decode_read_buffer",
    "decode_time",
    "decode_time6",
    "decode_user",
    "decode_user_set",
    "encode_attendance",
    "encode_buffer_ready",
    "encode_buffer_request",
    "encode_data_set",
    "encode_free_sizes",
    "encode_live_attendance",
    "encode_option_reply",
    "encode_option_request",
    "encode_prepare_data",
    "encode_read_buffer",
    "encode_time",
    "encode_time6",
    "encode_user",
    "parse_packet",
    "tcp_unwrap",
    "tcp_wrap",
]
