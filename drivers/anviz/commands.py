"""The Anviz TC_B protocol's numbers: command codes, ACK/RET values, download modes, clear types.

Plain constants and nothing else, so that the frame codec, the payload layouts, the driver and
the emulator all name a command the same way. Values follow docs/protocols/anviz.md.
"""

from __future__ import annotations

# Commands (request codes). A reply's code is the command | 0x80.
CMD_GET_SERIAL = 0x24
CMD_GET_CONFIG1 = 0x30  # firmware version, comm password, command version, ...
CMD_GET_CONFIG2 = 0x32  # includes the real-time push switch
CMD_SET_CONFIG2 = 0x33
CMD_GET_TIME = 0x38
CMD_SET_TIME = 0x39
CMD_GET_RECORD_INFO = 0x3C
CMD_DOWNLOAD_RECORDS = 0x40
CMD_GET_DEVICE_ID = 0x46
CMD_GET_MODEL = 0x48
CMD_CLEAR_RECORDS = 0x4E
CMD_GET_CAPACITY = 0x5D
# Remote commands (gateway/commands): staff records, deleting one, reboot [anviz.md §5.8].
CMD_REBOOT = 0x2E  # D = REBOOT_PARAMETER
CMD_DELETE_USER = 0x4C  # D = user id (5 bytes) + what to delete (0xFF: the whole user)
CMD_GET_USERS = 0x72  # D = (1: from the first | 0: the next), count <= USERS_PER_PACKET
CMD_SET_USERS = 0x73  # D = count, then that many 40-byte staff records
CMD_HEARTBEAT = 0x7F  # sent by the device, in request form
ACK_REALTIME_RECORD = 0xDF  # a punch pushed by the device, in reply form, unrequested
ACK_PONG = 0xFF  # the host's answer to a heartbeat

RET_SUCCESS = 0x00
RET_FAILED = 0x01
RET_NO_SUCH_USER = 0x06

REBOOT_PARAMETER = 0x60  # as the SDK sends it
DELETE_WHOLE_USER = 0xFF
USERS_PER_PACKET = 8

# 0x40 download modes (D[0]) and the per-packet limit (D[1]).
DOWNLOAD_CONTINUE = 0x00
DOWNLOAD_ALL_FROM_START = 0x01
DOWNLOAD_NEW_FROM_START = 0x02
DOWNLOAD_RESEND_LAST = 0x10
MAX_RECORDS_PER_PACKET = 25

# 0x4E clear types (D[0]).
CLEAR_DELETE_ALL = 0
CLEAR_NEW_FLAG_ALL = 1
CLEAR_NEW_FLAG_COUNT = 2
