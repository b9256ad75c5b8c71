"""The numbers of the ZK protocol: command and reply codes, event flags, table selectors.

Pure constants, named as in the vendor SDK and pyzk so captures and other clients' sources
read the same. Nothing here encodes or decodes.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------------------------------
# Command and reply codes
# ---------------------------------------------------------------------------------------

CMD_DB_RRQ: Final = 7
CMD_USER_WRQ: Final = 8
CMD_USERTEMP_RRQ: Final = 9
CMD_OPTIONS_RRQ: Final = 11
CMD_OPTIONS_WRQ: Final = 12
CMD_ATTLOG_RRQ: Final = 13
CMD_CLEAR_DATA: Final = 14
CMD_CLEAR_ATTLOG: Final = 15
CMD_DELETE_USER: Final = 18
CMD_UNLOCK: Final = 31
CMD_GET_FREE_SIZES: Final = 50
CMD_STARTVERIFY: Final = 60
CMD_CANCELCAPTURE: Final = 62
CMD_STATE_RRQ: Final = 64
CMD_GET_PINWIDTH: Final = 69
CMD_GET_TIME: Final = 201
CMD_SET_TIME: Final = 202
CMD_REG_EVENT: Final = 500
CMD_CONNECT: Final = 1000
CMD_EXIT: Final = 1001
CMD_ENABLEDEVICE: Final = 1002
CMD_DISABLEDEVICE: Final = 1003
CMD_RESTART: Final = 1004
CMD_POWEROFF: Final = 1005
CMD_REFRESHDATA: Final = 1013
CMD_GET_VERSION: Final = 1100
CMD_AUTH: Final = 1102
CMD_PREPARE_DATA: Final = 1500
CMD_DATA: Final = 1501
CMD_FREE_DATA: Final = 1502
CMD_PREPARE_BUFFER: Final = 1503  # a.k.a. CMD_DATA_WRRQ
CMD_READ_BUFFER: Final = 1504  # a.k.a. CMD_DATA_RDY

CMD_ACK_OK: Final = 2000
CMD_ACK_ERROR: Final = 2001
CMD_ACK_DATA: Final = 2002
CMD_ACK_UNAUTH: Final = 2005
CMD_ACK_UNKNOWN: Final = 0xFFFF

REPLY_CODES: Final = frozenset({CMD_ACK_OK, CMD_ACK_ERROR, CMD_ACK_DATA, CMD_ACK_UNAUTH, CMD_ACK_UNKNOWN})

# ---------------------------------------------------------------------------------------
# Real-time event codes (carried in the session field of a CMD_REG_EVENT packet)
# ---------------------------------------------------------------------------------------

EF_ATTLOG: Final = 1
EF_FINGER: Final = 2
EF_ENROLLUSER: Final = 4
EF_ENROLLFINGER: Final = 8
EF_BUTTON: Final = 16
EF_UNLOCK: Final = 32
EF_VERIFY: Final = 128
EF_FPFTR: Final = 256
EF_ALARM: Final = 512

# ---------------------------------------------------------------------------------------
# Table selectors used in the PREPARE_BUFFER argument
# ---------------------------------------------------------------------------------------

FCT_ATTLOG: Final = 1
FCT_FINGERTMP: Final = 2
FCT_OPLOG: Final = 4
FCT_USER: Final = 5
