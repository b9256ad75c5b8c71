"""The comm-key proof a client sends with CMD_AUTH when the terminal has a numeric key set.

Kept apart because it is the protocol's only piece of (weak) cryptography: a bit-reversed
key mixed with the session id and the letters `ZKSO`, then salted with a ticks byte.
"""

from __future__ import annotations

import struct


def comm_key_hash(key: int, session_id: int, ticks: int = 50) -> bytes:
    """The 4 CMD_AUTH data bytes for numeric comm key `key` on session `session_id`."""
    reversed_key = int(f"{key & 0xFFFFFFFF:032b}"[::-1], 2)
    mixed = bytearray(struct.pack("<I", (reversed_key + session_id) & 0xFFFFFFFF))
    for i, letter in enumerate(b"ZKSO"):
        mixed[i] ^= letter
    swapped = mixed[2:4] + mixed[0:2]
    t = ticks & 0xFF
    return bytes((swapped[0] ^ t, swapped[1] ^ t, t, swapped[3] ^ t))


def comm_key_matches(data: bytes, key: int, session_id: int) -> bool:
    """True when CMD_AUTH data proves `key`; the ticks byte is read from the packet itself."""
    if len(data) < 4:
        return False
    return bytes(data[:4]) == comm_key_hash(key, session_id, data[2])
